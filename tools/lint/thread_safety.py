#!/usr/bin/env python3
"""clang's thread-safety analysis (-Wthread-safety) over ldmserve's sources.

Takes each translation unit's command from the build's compile_commands.json
(whatever compiler built it), swaps in clang++ with -fsyntax-only
-Wthread-safety -Werror=thread-safety, and checks every unit that reaches an
absl::Mutex annotation (ABSL_GUARDED_BY and friends) through the project's
own headers. The full build of the same check is the CMake preset
`thread-safety`.

    thread_safety.py BUILD_DIR SOURCE_DIR [--jobs N]
    thread_safety.py BUILD_DIR SOURCE_DIR --expect-violation FILE.cc
        (FILE.cc must be reported: proves the check can fail)

Exit 0 clean, 1 on findings, 77 (skipped) without clang++.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys

from compile_commands import unit_flags

ANNOTATION = re.compile(
    r"ABSL_(GUARDED_BY|PT_GUARDED_BY|EXCLUSIVE_LOCKS_REQUIRED|"
    r"SHARED_LOCKS_REQUIRED|LOCKS_EXCLUDED|ACQUIRED_AFTER|ACQUIRED_BEFORE|"
    r"EXCLUSIVE_LOCK_FUNCTION|UNLOCK_FUNCTION|ASSERT_EXCLUSIVE_LOCK)\b")
PROJECT_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
FLAGS = ["-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety",
         "-Wno-unknown-warning-option"]


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def reaches_annotation(path, source_dir, memo):
    """Whether `path` or a project header it includes (transitively) carries
    a thread-safety annotation."""
    if path in memo:
        return memo[path]
    memo[path] = False  # Include cycles end here.
    text = read(path)
    found = bool(ANNOTATION.search(text))
    for include in PROJECT_INCLUDE.findall(text):
        header = os.path.join(source_dir, include)
        if not found and os.path.isfile(header):
            found = reaches_annotation(header, source_dir, memo)
    memo[path] = found
    return found


def clang_command(entry, clang, source):
    """The unit's compile command, as clang syntax-only with the analysis."""
    return [clang] + unit_flags(entry)[1:] + FLAGS + [source]


def check(command, directory):
    result = subprocess.run(command, cwd=directory, capture_output=True,
                            text=True)
    return result.returncode, result.stderr


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("source_dir")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--expect-violation")
    args = parser.parse_args()
    clang = shutil.which("clang++")
    if clang is None:
        print("SKIP: no clang++")
        return 77
    source_dir = os.path.realpath(args.source_dir)
    with open(os.path.join(args.build_dir, "compile_commands.json")) as f:
        entries = json.load(f)

    if args.expect_violation:
        # Compiled with the flags of a unit that uses absl::Mutex.
        template = next(e for e in entries
                        if e["file"].endswith("runtime/scheduler.cc"))
        code, output = check(
            clang_command(template, clang,
                          os.path.abspath(args.expect_violation)),
            template["directory"])
        if code != 0 and "-Wthread-safety" in output:
            print("the analysis reports the seeded violation:")
            print(output.strip().splitlines()[0])
            return 0
        print(f"FAIL: no thread-safety finding in {args.expect_violation}")
        print(output)
        return 1

    memo = {}
    build_dir = os.path.realpath(args.build_dir)

    def ours(path):  # Not generated code (the build may sit in the tree).
        path = os.path.realpath(path)
        return (path.startswith(source_dir + os.sep)
                and not path.startswith(build_dir + os.sep))

    units = [e for e in entries
             if ours(e["file"])
             and reaches_annotation(e["file"], source_dir, memo)]
    print(f"{len(units)} translation units reach absl::Mutex annotations")
    failures = 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = pool.map(
            lambda e: (e["file"],) + check(
                clang_command(e, clang, e["file"]), e["directory"]),
            units)
        for path, code, output in results:
            if code != 0:
                failures += 1
                print(f"--- {os.path.relpath(path, source_dir)}")
                print(output)
    if failures:
        print(f"FAIL: {failures} unit(s) with thread-safety findings")
        return 1
    print("clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
