#!/usr/bin/env python3
"""Checks that the layers include only what the architecture allows.

server/ldm (model, LibTorch) <- server/runtime (jobs, scheduler) <-
server/service (gRPC) <- server/main.cc: arrows point one way. The service
sees the model library only through its plain-typed seam
(server/ldm/generation.h): following every include of server/service
transitively must reach no LibTorch header (ATen, c10, torch) and no other
server/ldm header. Prints each violation with the include chain that leads
to it; exit status 1 if there is one.

Usage: layering.py [SOURCE_ROOT]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.MULTILINE)
TORCH_PREFIXES = ("ATen/", "c10/", "torch/")
# The model library's face towards the service: plain types only.
SEAM = {"server/ldm/generation.h", "server/ldm/sampler_options.h"}


def includes(root, path):
    with open(os.path.join(root, path), encoding="utf-8") as source:
        return [name for _, name in INCLUDE.findall(source.read())]


def sources(root, folder):
    for directory, _, files in os.walk(os.path.join(root, folder)):
        for name in sorted(files):
            if name.endswith((".h", ".cc")):
                yield os.path.relpath(os.path.join(directory, name), root)


def check_service(root):
    """Every header the service reaches, with the chain that reaches it."""
    problems = []
    for start in sources(root, "server/service"):
        chain_of = {start: [start]}
        pending = [start]
        while pending:
            path = pending.pop()
            for name in includes(root, path):
                chain = chain_of[path] + [name]
                if name.startswith(TORCH_PREFIXES):
                    problems.append("LibTorch in the service: " +
                                    " -> ".join(chain))
                    continue
                if name.startswith("server/ldm/") and name not in SEAM:
                    problems.append("model header in the service: " +
                                    " -> ".join(chain))
                    continue
                if (name.startswith("server/") and name not in chain_of and
                        os.path.exists(os.path.join(root, name))):
                    chain_of[name] = chain
                    pending.append(name)
    return problems


def check_direction(root):
    """A lower layer never includes a higher one."""
    above = {
        "server/common": ("server/ldm/", "server/runtime/", "server/service/"),
        "server/ldm": ("server/runtime/", "server/service/"),
        "server/runtime": ("server/service/",),
    }
    problems = []
    for folder, forbidden in above.items():
        for path in sources(root, folder):
            for name in includes(root, path):
                if name.startswith(forbidden):
                    problems.append(f"{path} includes {name}, a higher layer")
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..")
    problems = sorted(set(check_service(root) + check_direction(root)))
    for problem in problems:
        print(problem)
    checked = sum(1 for folder in ("server/common", "server/ldm",
                                   "server/runtime", "server/service")
                  for _ in sources(root, folder))
    print(f"layering: {checked} files checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
