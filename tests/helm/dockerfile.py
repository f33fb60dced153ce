"""A small Dockerfile parser and ``.dockerignore`` matcher, for the image tests.

Logical lines with their continuations joined and comments dropped, stages, ARG/ENV
substitution, COPY sources and ``pip install`` requirements; enough for the project's own
Dockerfiles, no Docker engine needed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]



@dataclass
class Instruction:
    """One logical line of a Dockerfile.

    Attributes
    ----------
    keyword : str
        The instruction, upper case (``FROM``, ``RUN``...).
    args : str
        Everything after the keyword, continuation lines joined.
    line : int
        The 1-based line where the instruction starts.
    """

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """One build stage: a ``FROM`` and the instructions up to the next one.

    Attributes
    ----------
    base : str
        The ``FROM`` image with build arguments substituted (or an earlier stage's name).
    name : str or None
        The ``AS`` name.
    instructions : list of Instruction
        The stage's instructions after its ``FROM``.
    env : dict of str to str
        ARG and ENV values in effect at the end of the stage (ENV inherited from a parent stage).
    env_names : set of str
        The names of ``env`` set by ENV (what a stage built ``FROM`` this one inherits).
    """

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_names: set[str] = field(default_factory=set)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions of one kind, in order.

        Parameters
        ----------
        keyword : str
            An instruction keyword, any case.

        Returns
        -------
        list of Instruction
        """
        return [i for i in self.instructions if i.keyword == keyword.upper()]

    def expand(self, text: str) -> str:
        """Substitute the stage's ARG and ENV values into ``text``.

        Parameters
        ----------
        text : str
            Text with ``$NAME`` or ``${NAME}`` references.

        Returns
        -------
        str
            The text with known names replaced; unknown ones (shell variables) are left as they are.
        """
        return expand(text, self.env)


@dataclass
class Dockerfile:
    """A parsed Dockerfile.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    global_args : dict of str to str
        ``ARG`` defaults declared before the first ``FROM``.
    stages : list of Stage
        The build stages in order; the last one is the image.
    """

    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The stage that becomes the image."""
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        """A stage by its ``AS`` name.

        Parameters
        ----------
        name : str
            The stage's name.

        Returns
        -------
        Stage
        """
        return next(s for s in self.stages if s.name == name)

    def external_base(self, stage: Stage) -> str:
        """The registry image a stage finally builds on, following ``FROM <stage>`` links.

        Parameters
        ----------
        stage : Stage
            A stage of this file.

        Returns
        -------
        str
            The image reference (``name:tag``).
        """
        names = {s.name for s in self.stages if s.name}
        while stage.base in names:
            stage = self.stage(stage.base)
        return stage.base


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand(text: str, env: dict[str, str]) -> str:
    """Substitute ``$NAME`` and ``${NAME}`` the way Docker does for known names.

    Parameters
    ----------
    text : str
        Text with variable references.
    env : dict of str to str
        Known names and their values.

    Returns
    -------
    str
        The text with known names replaced and unknown references left untouched.
    """
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))

    return _VAR.sub(sub, text)


def logical_lines(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions.

    Comment lines (also those inside a continuation, and parser directives) and blank lines are
    dropped; a line ending in a backslash continues on the next one, as Docker joins them.

    Parameters
    ----------
    text : str
        The Dockerfile's text.

    Returns
    -------
    list of Instruction
    """
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        continued = raw.rstrip().endswith("\\")
        parts.append(raw.rstrip()[:-1] if continued else raw)
        if not continued:
            keyword, _, args = "".join(parts).strip().partition(" ")
            out.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    if parts:
        keyword, _, args = "".join(parts).strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def key_values(args: str) -> dict[str, str]:
    """The pairs of an ``ENV`` or ``LABEL`` instruction (``K=V ...``, or ENV's old ``K V`` form).

    Parameters
    ----------
    args : str
        The instruction's arguments.

    Returns
    -------
    dict of str to str
        Values unquoted, not substituted.
    """
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.split("=", 1) for t in tokens)


def parse_dockerfile(path: Path) -> Dockerfile:
    """Parse a Dockerfile into its global build arguments and stages.

    Parameters
    ----------
    path : pathlib.Path
        The Dockerfile.

    Returns
    -------
    Dockerfile
    """
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in logical_lines(path.read_text()):
        if ins.keyword == "FROM":
            tokens = [t for t in ins.args.split() if not t.startswith("--")]
            name = tokens[2] if len(tokens) == 3 and tokens[1].lower() == "as" else None
            base = expand(tokens[0], global_args)
            parent = next((s for s in stages if s.name == base), None)
            # A stage inherits its parent stage's ENV, not its ARGs.
            inherited = {k: parent.env[k] for k in parent.env_names} if parent else {}
            stages.append(Stage(base, name, env=inherited, env_names=set(inherited)))
        elif not stages:
            if ins.keyword == "ARG":
                name, _, default = ins.args.partition("=")
                global_args[name.strip()] = default.strip().strip('"')
        else:
            stage = stages[-1]
            stage.instructions.append(ins)
            if ins.keyword == "ARG":
                name, eq, default = ins.args.partition("=")
                name = name.strip()
                value = stage.expand(default.strip().strip('"')) if eq else global_args.get(name)
                if value is not None:
                    stage.env[name] = value
            elif ins.keyword == "ENV":
                for k, v in key_values(ins.args).items():
                    stage.env[k] = stage.expand(v)
                    stage.env_names.add(k)
    return Dockerfile(path, global_args, stages)


@dataclass
class Copy:
    """A ``COPY`` or ``ADD`` instruction.

    Attributes
    ----------
    sources : list of str
        The source paths (in the build context, or in ``from_``).
    dest : str
        The destination.
    from_ : str or None
        The ``--from=`` stage or image, None for the build context.
    """

    sources: list[str]
    dest: str
    from_: str | None


def parse_copy(ins: Instruction) -> Copy:
    """Read a ``COPY``/``ADD`` instruction, shell or JSON form, flags included.

    Parameters
    ----------
    ins : Instruction
        A COPY or ADD instruction.

    Returns
    -------
    Copy
    """
    tokens = shlex.split(ins.args)
    flags = [t for t in tokens if t.startswith("--")]
    rest = [t for t in tokens if not t.startswith("--")]
    if ins.args.lstrip().startswith("[") or (rest and rest[0].startswith("[")):
        rest = json.loads(ins.args[ins.args.index("["):])
    from_ = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
    return Copy(rest[:-1], rest[-1], from_)


def context_copies(df: Dockerfile) -> list[tuple[Stage, Copy]]:
    """Every COPY/ADD of a Dockerfile that reads the build context (not ``--from=``).

    Parameters
    ----------
    df : Dockerfile
        A parsed Dockerfile.

    Returns
    -------
    list of (Stage, Copy)
    """
    return [
        (stage, copy)
        for stage in df.stages
        for ins in stage.instructions
        if ins.keyword in ("COPY", "ADD") and (copy := parse_copy(ins)).from_ is None
    ]


def pip_installs(stage: Stage) -> list[tuple[int, list[str]]]:
    """The ``pip install`` commands of a stage's RUN instructions, arguments substituted.

    Parameters
    ----------
    stage : Stage
        A build stage.

    Returns
    -------
    list of (int, list of str)
        Each command's position among the stage's instructions and its tokens after
        ``install``.
    """
    found = []
    for index, ins in enumerate(stage.instructions):
        if ins.keyword != "RUN":
            continue
        lexer = shlex.shlex(stage.expand(ins.args), posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if set(token) <= set(";&|()<>"):
                commands.append([])  # &&, ||, |, ;, redirections, subshells: a new command
            else:
                commands[-1].append(token)
        for tokens in commands:
            for at in range(len(tokens) - 1):
                if tokens[at].endswith("pip") and tokens[at + 1] == "install":
                    found.append((index, tokens[at + 2:]))
    return found


def requirements(tokens: list[str]) -> list[str]:
    """The requirement arguments of a ``pip install`` (options and their values left out).

    Parameters
    ----------
    tokens : list of str
        The tokens after ``install``.

    Returns
    -------
    list of str
    """
    with_value = {"-c", "-r", "--index-url", "-i", "--extra-index-url", "--constraint",
                  "--requirement", "-f", "--find-links"}
    out, skip = [], False
    for t in tokens:
        if skip:
            skip = False
        elif t in with_value:
            skip = True
        elif not t.startswith("-"):
            out.append(t)
    return out


# --- .dockerignore ----------------------------------------------------------------------------


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    """The patterns of a ``.dockerignore``, in order, comments and blank lines dropped.

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    list of str
    """
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_excluded(relpath: str, patterns: list[str]) -> bool:
    """Whether Docker leaves a path of the build context out, as far as these patterns go.

    A pattern excludes a path when it matches the path or one of its parent folders (fnmatch,
    where ``*`` also crosses ``/``: broader than Docker's match, so never too lenient for a
    COPY source); a leading ``**/`` also matches at the top. ``!pattern`` re-includes, and the
    last pattern that matches decides, as in Docker.

    Parameters
    ----------
    relpath : str
        A path relative to the context root, with ``/``.
    patterns : list of str
        The ``.dockerignore`` patterns.

    Returns
    -------
    bool
    """
    parts = PurePosixPath(relpath.strip("/")).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(p, alt) for p in prefixes for alt in alternatives):
            excluded = not negate
    return excluded
