"""compile_commands.json entries as the lint scripts reuse them."""
import shlex


def unit_flags(entry):
    """The unit's compiler and flags, without its output (-o FILE), -c and
    its own source file: ready for another source or extra flags."""
    arguments = entry.get("arguments") or shlex.split(entry["command"])
    flags = [arguments[0]]
    skip_next = False
    for argument in arguments[1:]:
        if skip_next:
            skip_next = False
            continue
        if argument in ("-o", "-c"):
            skip_next = argument == "-o"
            continue
        if argument == entry["file"]:
            continue
        flags.append(argument)
    return flags
