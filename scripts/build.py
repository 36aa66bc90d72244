"""Assemble the Function Compute code package: `make build [FC_PYTHON=3.10] [BUILD_DIR=build/code]`.

The package holds `index.py`, the `dwnotify` package, the built-in templates, `notifier.yaml` (which
must pass `dwnotify check`, or nothing is built) and every runtime dependency, vendored as manylinux
x86_64 wheels for the runtime's Python, whatever machine builds it: nothing is taken from what a
runtime happens to ship. Pins that ship only a source archive (SOURCE_ONLY: aliyun-fc2, pure Python)
are built into wheels first and vendored from those. Modules are compiled to `.pyc` when an
interpreter of the target version is at hand, because FC's code folder is read-only and a cold start
would otherwise compile every module it imports, every time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "code"
# Debian 10 (python3.10) has glibc 2.28, Debian 11 (python3.12) 2.31: both run manylinux_2_28 wheels.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")

# Installed by dependencies' metadata but never imported on the paths dwnotify uses, checked by the
# handler test importing the Tablestore SDK and the DataWorks SDK from the package.
PRUNE = {
    "numpy": "flatbuffers imports it only when present; tablestore needs it for vector search only",
    "numpy.libs": "numpy's shared libraries",
    "future": "a Python 2 compatibility layer; tablestore's `from builtins import` is the stdlib here",
    "past": "part of future",
    "libfuturize": "part of future",
    "libpasteurize": "part of future",
    "bin": "console scripts with the build machine's interpreter in their shebang",
}
# Pure-Python pins with no wheel on the package index: `pip wheel --no-deps` builds each into a wheel,
# which the vendoring step (binary only) then takes from a local folder. Their pins stay in requirements.txt.
SOURCE_ONLY = ("aliyun-fc2",)
_PRUNED_DISTS = re.compile(r"^(numpy|future)-[^-]+\.dist-info$")
# Binaries some wheels carry for other platforms (tablestore ships a macOS build of one module).
_OTHER_PLATFORMS = ("*-darwin.so", "*.dylib", "*.pyd", "*.dll")


def runtime_version(value: str) -> str:
    """`3.10` from `3.10` or `python3.10` (the s.yaml runtime name)."""
    match = re.fullmatch(r"(?:python)?(3\.\d+)", value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a Python version such as 3.10 or python3.10")
    return match.group(1)


def pinned(name: str, requirements: Path) -> str:
    """The `name==version` line of `requirements` (names compared as pip does)."""
    wanted = re.sub(r"[-_.]+", "-", name).lower()
    for line in requirements.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", requirement)
        if match and re.sub(r"[-_.]+", "-", match.group(1)).lower() == wanted:
            return f"{match.group(1)}=={match.group(2)}"
    raise SystemExit(f"{requirements.name}: {name} is in SOURCE_ONLY but not pinned there with ==")


def build_source_wheels(wheels: Path) -> None:
    """Build each SOURCE_ONLY pin into a wheel in `wheels` (pure Python: one wheel fits every target)."""
    requirements = [pinned(name, ROOT / "requirements.txt") for name in SOURCE_ONLY]
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps"]
    command += ["--wheel-dir", str(wheels), *requirements]
    subprocess.run(command, check=True)  # noqa: S603 - argv built here, no shell


def vendor(out: Path, python: str) -> None:
    """pip-install requirements.txt into `out` as wheels for FC's platform and `python`."""
    with tempfile.TemporaryDirectory(prefix="dwnotify-wheels-") as wheels:
        build_source_wheels(Path(wheels))
        install(out, python, Path(wheels))


def install(out: Path, python: str, wheels: Path) -> None:
    """The binary-only install for the target, also finding the wheels built into `wheels`."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",  # pip would compile for the interpreter running it, not for the target
        "--target",
        str(out),
        *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--only-binary=:all:",
        "--find-links",
        str(wheels),
        "-r",
        str(ROOT / "requirements.txt"),
    ]
    subprocess.run(command, check=True)  # noqa: S603 - argv built here, no shell


def prune(out: Path) -> None:
    """Remove what the runtime never imports (see PRUNE)."""
    for name in PRUNE:
        shutil.rmtree(out / name, ignore_errors=True)
    for path in out.iterdir():
        if _PRUNED_DISTS.match(path.name):
            shutil.rmtree(path)
    for cache in list(out.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    for pattern in _OTHER_PLATFORMS:
        for path in list(out.rglob(pattern)):
            path.unlink()


def copy_project(out: Path) -> None:
    """The handler, the package, the built-in templates and the example config."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy2(ROOT / "functions" / "index.py", out / "index.py")
    shutil.copytree(ROOT / "functions" / "dwnotify", out / "dwnotify", ignore=ignore)
    shutil.copytree(ROOT / "templates", out / "templates", ignore=ignore)
    shutil.copy2(ROOT / "notifier.yaml", out / "notifier.yaml")


# A value for each `${NAME}` the packaged config needs and this shell does not set, so that `check`
# can load it: one URL of every chat type's shape (a Lark hook path, a WeCom key, a DingTalk token).
_PLACEHOLDER_URL = "https://placeholder.invalid/open-apis/bot/v2/hook/{name}?key={name}&access_token={name}"


def placeholder(name: str) -> str:
    """A stand-in value that passes the config's checks for a variable of this name."""
    if "URL" in name:  # one URL per variable: two channels on one webhook are a config error
        return _PLACEHOLDER_URL.format(name=name)
    if "ENDPOINT" in name:
        return "https://placeholder.cn-shanghai.ots.aliyuncs.com"
    return "SECplaceholder" if "SECRET" in name else "placeholder"


def check_config(out: Path) -> None:
    """Run `dwnotify check` on the packaged config, so a broken template never reaches FC.

    Variables the shell sets are used as they are; the others get placeholders (`placeholder`).
    """
    config = out / "notifier.yaml"
    from dwnotify.interpolate import expand  # the config's own reading of `${NAME}`, `$$` and defaults

    needed = set(expand(config.read_text(encoding="utf-8"), {}).missing)
    environ = {**os.environ, **{name: placeholder(name) for name in needed if not os.environ.get(name)}}
    command = [sys.executable, "-m", "dwnotify", "check", "--config", str(config)]
    answer = subprocess.run(command, env=environ, capture_output=True, text=True, check=False)  # noqa: S603
    if answer.returncode != 0:
        problems = f"{answer.stdout}{answer.stderr}"
        raise SystemExit(f"the packaged config does not pass `dwnotify check`:\n{problems}")


def target_interpreter(python: str) -> str | None:
    """An interpreter of version `python` on this machine that runs, if any (a pyenv shim may not)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == python:
        return sys.executable
    found = shutil.which(f"python{python}")
    if found is None:
        return None
    probe = [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    try:
        answer = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except OSError:
        return None
    return found if answer.returncode == 0 and answer.stdout.strip() == python else None


def compile_package(out: Path, interpreter: str) -> None:
    """Byte-compile everything for the target; unchecked-hash .pyc files stay valid after zipping."""
    command = [interpreter, "-m", "compileall", "-q", "-j", "0"]
    command += ["--invalidation-mode", "unchecked-hash", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - argv built here


def sizes(out: Path) -> dict[str, int]:
    """Bytes on disk per top-level entry of the package."""
    totals: dict[str, int] = {}
    for path in out.rglob("*"):
        if path.is_file():
            top = path.relative_to(out).parts[0]
            totals[top] = totals.get(top, 0) + path.stat().st_size
    return totals


def zipped_size(out: Path) -> int:
    """What the code package weighs as the zip `s deploy` uploads."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "code.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    bundle.write(path, path.relative_to(out))
        return archive.stat().st_size


def build(out: Path, python: str) -> dict[str, object]:
    """Build the package into `out` (replacing it) and describe what was built."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vendor(out, python)
    prune(out)
    copy_project(out)
    check_config(out)
    interpreter = target_interpreter(python)
    if interpreter is not None:
        compile_package(out, interpreter)
    info: dict[str, object] = {
        "python": python,
        "platforms": list(PLATFORMS),
        "compiled": interpreter is not None,
    }
    (out / "build-info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def report(out: Path, info: dict[str, object]) -> str:
    """One paragraph: where, for which Python, how big, and the largest parts."""
    totals = sizes(out)
    files = sum(1 for path in out.rglob("*") if path.is_file())
    largest = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:6]
    lines = [
        f"built {out} for python{info['python']} (manylinux x86_64): {_mb(sum(totals.values()))} on disk, "
        f"{_mb(zipped_size(out))} zipped, {files} files",
        "largest: " + ", ".join(f"{name} {_mb(size)}" for name, size in largest),
    ]
    if not info["compiled"]:
        lines.append(
            f"no python{info['python']} here to compile .pyc files with: cold starts will compile "
            "every imported module (install that Python to build a faster package)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: build, then print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", type=runtime_version, default=os.environ.get("FC_PYTHON", "3.10"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    info = build(out, args.python)
    print(report(out, info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
