"""Print the part of requirements.lock that one image needs: the runtime closure of some workspace members.

The workspace lock pins every member and the dev tools together. An image wants only what `ticketing-common` and
one service need at run time, with the same pins and hashes, and without the workspace's own editable lines
(those packages are installed from their sources afterwards). uv writes, under every pin, the packages that
pulled it in (`# via ...`), so the closure is every pin reachable from the chosen members through those lines.

Usage: python lock_subset.py requirements.lock ticketing-common ticketing-auth > image.lock
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==")
_EDITABLE = re.compile(r"^-e\s+(\S+)")


def canonical(name: str) -> str:
    """PEP 503 name normalisation, as uv writes names in its `via` comments."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    """One requirement of the lock with its continuation lines and the packages that pulled it in."""

    name: str
    editable: bool
    lines: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)


def parse(text: str) -> list[Entry]:
    """Split a `uv pip compile` output into entries."""
    entries: list[Entry] = []
    in_via = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            if line.startswith("#"):
                continue
            if match := _EDITABLE.match(line):
                # The workspace members are named in `via` lines by their project name, not their path.
                entries.append(Entry(name=_member_name(match.group(1)), editable=True, lines=[line]))
            elif match := _PIN.match(line):
                entries.append(Entry(name=canonical(match.group(1)), editable=False, lines=[line]))
            else:
                raise ValueError(f"unexpected line in the lock: {line!r}")
            in_via = False
            continue
        entry = entries[-1]
        entry.lines.append(line)
        comment = line.strip()
        if comment.startswith("# via"):
            rest = comment.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                entry.via.add(_via_name(rest))
        elif in_via and comment.startswith("#   "):
            entry.via.add(_via_name(comment.removeprefix("#").strip()))
    return entries


def _via_name(text: str) -> str:
    # "ticketing (pyproject.toml:dev)" is the dev group; "-r requirements.in" the input file; extras are dropped.
    return canonical(text.split(" ")[0].split("[")[0]) if not text.startswith("-") else text


def _member_name(path: str) -> str:
    pyproject = Path(path) / "pyproject.toml"
    if pyproject.is_file():
        match = re.search(r'(?m)^name\s*=\s*"([^"]+)"', pyproject.read_text())
        if match:
            return canonical(match.group(1))
    # Without the sources (the image copies only the lock first), the layout names the member.
    base = Path(path).name
    return canonical(base if base.startswith("ticketing") else f"ticketing-{base}")


def subset(entries: list[Entry], roots: set[str]) -> list[Entry]:
    """The pinned, non-editable entries reachable from the roots through the `via` lines."""
    known = {e.name for e in entries if e.editable}
    missing = roots - known
    if missing:
        raise SystemExit(f"not workspace members of this lock: {', '.join(sorted(missing))} (run `make lock`)")
    needed = set(roots)
    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.name not in needed and entry.via & needed:
                needed.add(entry.name)
                changed = True
    return [e for e in entries if not e.editable and e.name in needed]


def main(argv: list[str]) -> None:
    """Write the subset of the lock for the given members to stdout."""
    if len(argv) < 2:
        raise SystemExit(__doc__)
    lock, *members = argv
    roots = {canonical(m) for m in members}
    chosen = subset(parse(Path(lock).read_text()), roots)
    print(f"# The pins of {lock} that {', '.join(sorted(roots))} need at run time (infra/docker/lock_subset.py).")
    for entry in chosen:
        print("\n".join(entry.lines))


if __name__ == "__main__":
    main(sys.argv[1:])
