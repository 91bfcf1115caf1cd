#!/usr/bin/env python3
"""Compiles ldmserve's CUDA-only code paths without a CUDA LibTorch.

The units that test LDMSERVE_WITH_CUDA* (CUDA memory figures, CUDA graphs)
build only against a GPU machine's LibTorch, which CI does not have. Debian's
LibTorch ships the CUDA headers (ATen/cuda, c10/cuda) though, so with a CUDA
toolkit's runtime headers each such unit is checked here syntax-only, with
its own compile command from compile_commands.json and the CUDA defines on.
(The headers lack the generated c10/cuda/impl/cuda_cmake_macros.h: an empty
one is supplied.) This catches a typo or a wrong API before a device session
spends its minutes on it; it cannot catch what changed between LibTorch 1.13
and the GPU machine's 2.x (unet_runner.cc keeps to the calls both have).

    cuda_syntax.py BUILD_DIR SOURCE_DIR
    cuda_syntax.py BUILD_DIR SOURCE_DIR --expect-error FILE.cc
        (FILE.cc, compiled the same way, must fail: proves the defines reach)

Exit 0 clean, 1 on errors, 77 (skipped) without the CUDA headers.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

from compile_commands import unit_flags

CUDA_GUARD = re.compile(r"#\s*if\s+defined\(LDMSERVE_WITH_CUDA")
DEFINES = ["-DLDMSERVE_WITH_CUDA=1", "-DLDMSERVE_WITH_CUDA_GRAPHS=1"]


def cuda_include_dir():
    """A CUDA toolkit's include directory with cuda_runtime_api.h."""
    candidates = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda",
                  *sorted(glob.glob("/usr/local/cuda-*"), reverse=True), "/usr"]
    for root in candidates:
        include = os.path.join(root, "include") if root else ""
        if include and os.path.isfile(
                os.path.join(include, "cuda_runtime_api.h")):
            return include
    return None


def syntax_command(entry, source, extra):
    return unit_flags(entry) + extra + ["-fsyntax-only", source]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("source_dir")
    parser.add_argument("--expect-error")
    args = parser.parse_args()
    cuda_include = cuda_include_dir()
    torch_cuda = "/usr/include/ATen/cuda/CUDAGraph.h"
    if cuda_include is None or not os.path.isfile(torch_cuda):
        print("SKIP: no CUDA runtime headers or no LibTorch CUDA headers")
        return 77
    source_dir = os.path.realpath(args.source_dir)
    with open(os.path.join(args.build_dir, "compile_commands.json")) as f:
        entries = json.load(f)
    units = [e for e in entries
             if os.path.isfile(e["file"])  # A stale entry: file removed.
             and os.path.realpath(e["file"]).startswith(
                 os.path.join(source_dir, "server") + os.sep)
             and CUDA_GUARD.search(open(e["file"], encoding="utf-8").read())]
    with tempfile.TemporaryDirectory() as shim:
        macros = os.path.join(shim, "c10", "cuda", "impl")
        os.makedirs(macros)
        with open(os.path.join(macros, "cuda_cmake_macros.h"), "w") as f:
            f.write("#pragma once\n")
        extra = DEFINES + ["-isystem", shim, "-isystem", cuda_include]
        if args.expect_error:
            template = next(e for e in entries
                            if e["file"].endswith("ldm/unet_runner.cc"))
            result = subprocess.run(
                syntax_command(template, os.path.abspath(args.expect_error),
                               extra),
                cwd=template["directory"], capture_output=True, text=True)
            if result.returncode != 0 and "seeded" in result.stderr:
                print("the check reports the seeded error in the CUDA path")
                return 0
            print(f"FAIL: no error from {args.expect_error}")
            print(result.stderr)
            return 1
        print(f"{len(units)} units with CUDA-only code, against "
              f"{cuda_include}")
        failures = 0
        for entry in units:
            result = subprocess.run(
                syntax_command(entry, entry["file"], extra),
                cwd=entry["directory"], capture_output=True, text=True)
            if result.returncode != 0:
                failures += 1
                print(f"--- {os.path.relpath(entry['file'], source_dir)}")
                print(result.stderr)
    if failures:
        print(f"FAIL: {failures} unit(s) do not compile with CUDA on")
        return 1
    print("clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
