#!/usr/bin/env python3
"""Consistency checks of the Shoulder layer that need no Yocto build.

Run by scripts/check (which also runs oelint-adv and the crates include
freshness check). Each check prints what it looked at; a failure names the
file, the problem and the fix, and makes the exit status 1.

  - conf/layer.conf: collection, LAYERDEPENDS, LAYERSERIES_COMPAT, and that
    BBFILES picks up every recipe in the layer;
  - every require/include resolves, every file:// in SRC_URI exists (and no
    file under files/ is left unused), every inherited class is known;
  - LIC_FILES_CHKSUM md5s match the files in the repository, computed the
    way bitbake's license QA does (beginline/endline included); entries in
    ${CARGO_VENDORING_DIRECTORY} (the crates' licence files) are skipped:
    update-licenses --check checks them against the crate sources;
  - PV matches the workspace version in Cargo.toml;
  - the agent.toml template renders to TOML whose keys and value types are
    those of agent/agent.example.toml (the agent rejects unknown keys);
  - the systemd units pass `systemd-analyze verify` (when systemd-analyze
    is installed);
  - the kas files validate against kas's schema (when kas is installed) and
    name layers and includes that exist;
  - Cargo.lock only has sources bitbake can fetch (crates.io, paths);
  - SRCREV is a commit of this repository whose Cargo.lock files are the
    working tree's (what the crates include is made from); a shallow clone
    that lacks the commit is only noted (fatal with --release);
  - the layer claims only releases whose Rust builds the crates;
  - the kernel fragment sets the options the agent needs, the README lists
    them, and only DISTRO_FEATURES "shoulder" applies it;
  - the reference kas file builds the checkout it sits in.
"""

import argparse
import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        sys.exit("error: Python 3.11+ (tomllib) or the 'tomli' package is needed; run with a newer python3")

from oe_license import lic_md5

LAYER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(LAYER)
COLLECTION = "shoulder"
REQUIRED_SERIES = ("wrynose",)
# Releases the layer must not claim: their oe-core Rust cannot build the
# crates (RELEASE_RUST below), and nothing here brings a newer one.
UNSUPPORTED_SERIES = ("scarthgap",)

# Classes the recipes may inherit: all from openembedded-core, checked by
# hand against wrynose. A class outside this list (a typo, or
# one from another layer) would fail parsing on a device builder's machine.
KNOWN_CLASSES = {
    "allarch", "cargo", "cargo-update-recipe-crates", "core-image", "externalsrc",
    "features_check", "packagegroup", "ptest-cargo", "systemd", "useradd",
}
# Includes that live in openembedded-core rather than in this layer.
EXTERNAL_INCLUDES = {"recipes-core/images/core-image-minimal.bb"}
# md5 of openembedded-core's meta/files/common-licenses/<name>.
COMMON_LICENSE_MD5 = {"MIT": "0835ade698e0bcf8506ecda2f7b4f302"}
# The Rust each supported release ships (meta/recipes-devtools/rust).
RELEASE_RUST = {"wrynose": (1, 94, 1), "scarthgap": (1, 75, 0)}
# Generous bound on a recipe or include read by these checks.
MAX_META_BYTES = 4 * 1024 * 1024


class Report:
    def __init__(self):
        self.failures = 0
        self.warnings = 0
        # Includes are checked once per recipe using them; report each problem once.
        self.seen = set()

    def ok(self, msg):
        print(f"  ok: {msg}")

    def note(self, msg):
        if msg not in self.seen:
            self.seen.add(msg)
            print(f"  note: {msg}")

    def warn(self, msg):
        if msg not in self.seen:
            self.seen.add(msg)
            self.warnings += 1
            print(f"  WARNING: {msg}")

    def fail(self, msg):
        if msg not in self.seen:
            self.seen.add(msg)
            self.failures += 1
            print(f"  FAIL: {msg}")


def rel(path):
    return os.path.relpath(path, REPO)


def read_text(path):
    if os.path.getsize(path) > MAX_META_BYTES:
        raise ValueError(f"{rel(path)} is larger than {MAX_META_BYTES} bytes")
    with open(path, encoding="utf-8") as f:
        return f.read()


def logical_lines(text):
    """BitBake lines: backslash-newline continues a line. Yields (lineno, line)."""
    start, buf = None, ""
    for number, line in enumerate(text.splitlines(), 1):
        if start is None:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        yield start, buf + line
        start, buf = None, ""
    if start is not None:
        yield start, buf


ASSIGN_RE = re.compile(r'^\s*(export\s+)?([A-Za-z0-9_${}:\-.\[\]]+)\s*(\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)\s*"(.*)"\s*$')


def assignments(text):
    """(lineno, name, op, value) for simple double-quoted assignments."""
    for number, line in logical_lines(text):
        if line.lstrip().startswith("#"):
            continue
        m = ASSIGN_RE.match(line)
        if m:
            yield number, m.group(2), m.group(3), m.group(4)


def directives(text, keyword):
    for number, line in logical_lines(text):
        m = re.match(rf"^\s*{keyword}\s+(.+?)\s*$", line)
        if m:
            yield number, m.group(1)


def recipe_names(path):
    base = os.path.basename(path)
    stem = base.rsplit(".", 1)[0]
    bpn = stem.split("_", 1)[0]
    return {"BPN": bpn, "PN": bpn}


def resolve_include(name, including_file, names):
    for key, value in names.items():
        name = name.replace("${%s}" % key, value)
    if "${" in name:
        return None, f"cannot resolve variables in '{name}'"
    for base in (os.path.dirname(including_file), LAYER):
        candidate = os.path.join(base, name)
        if os.path.isfile(candidate):
            return candidate, None
    if name in EXTERNAL_INCLUDES:
        return "external", None
    return None, f"'{name}' is neither next to {rel(including_file)} nor under the layer root"


def metadata_closure(recipe, report):
    """The recipe and every include it pulls in: [(path, text)]."""
    names = recipe_names(recipe)
    seen, order, todo = set(), [], [recipe]
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        text = read_text(path)
        order.append((path, text))
        for keyword in ("require", "include"):
            for number, arg in directives(text, keyword):
                found, problem = resolve_include(arg, path, names)
                if found == "external":
                    continue
                if found is None:
                    report.fail(f"{rel(path)}:{number}: {keyword} {arg}: {problem}; fix the path")
                else:
                    todo.append(found)
    return order


def check_layer_conf(report):
    print("layer.conf")
    path = os.path.join(LAYER, "conf", "layer.conf")
    try:
        text = read_text(path)
    except OSError as err:
        report.fail(f"cannot read {rel(path)}: {err.strerror}")
        return
    values = {}
    for _, name, op, value in assignments(text):
        values[name] = (values.get(name, "") + " " + value) if op in ("+=", ".=") else value
    if COLLECTION not in values.get("BBFILE_COLLECTIONS", "").split():
        report.fail(f"{rel(path)}: BBFILE_COLLECTIONS does not add '{COLLECTION}'")
    if "core" not in values.get(f"LAYERDEPENDS_{COLLECTION}", "").split():
        report.fail(f"{rel(path)}: LAYERDEPENDS_{COLLECTION} must name 'core'")
    compat = values.get(f"LAYERSERIES_COMPAT_{COLLECTION}", "").split()
    missing = [s for s in REQUIRED_SERIES if s not in compat]
    if missing:
        report.fail(f"{rel(path)}: LAYERSERIES_COMPAT_{COLLECTION} lacks {', '.join(missing)}")
    claimed = [s for s in compat if s in UNSUPPORTED_SERIES]
    if claimed:
        report.fail(f"{rel(path)}: LAYERSERIES_COMPAT_{COLLECTION} claims {', '.join(claimed)}, whose Rust "
                    "cannot build the crates (README.md, 'Yocto releases'); drop it")
    if f"BBFILE_PATTERN_{COLLECTION}" not in values or f"BBFILE_PRIORITY_{COLLECTION}" not in values:
        report.fail(f"{rel(path)}: BBFILE_PATTERN_{COLLECTION} and BBFILE_PRIORITY_{COLLECTION} must be set")
    patterns = [p.replace("${LAYERDIR}", LAYER) for p in values.get("BBFILES", "").split()]
    # BBFILES_DYNAMIC entries are "collection:pattern", read when that layer is there.
    patterns += [p.split(":", 1)[1].replace("${LAYERDIR}", LAYER)
                 for p in values.get("BBFILES_DYNAMIC", "").split() if ":" in p]
    recipes = sorted(glob.glob(os.path.join(LAYER, "**", "*.bb"), recursive=True)
                     + glob.glob(os.path.join(LAYER, "**", "*.bbappend"), recursive=True))
    unmatched = [r for r in recipes if not any(fnmatch.fnmatchcase(r, p) for p in patterns)]
    for r in unmatched:
        report.fail(f"{rel(r)} is not matched by BBFILES in {rel(path)}: move it to recipes-*/<dir>/")
    if not unmatched:
        report.ok(f"collection '{COLLECTION}', depends on core, compatible with {' '.join(compat)}; "
                  f"BBFILES picks up all {len(recipes)} recipes")
    return recipes


def check_license(path, number, value, report):
    vendored = 0
    for uri in value.split():
        if not uri.startswith("file://"):
            report.fail(f"{rel(path)}:{number}: LIC_FILES_CHKSUM entry '{uri}' is not a file:// URI")
            continue
        parts = uri[len("file://"):].split(";")
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        target, md5 = parts[0], params.get("md5")
        if not md5:
            report.fail(f"{rel(path)}:{number}: {target} has no md5 in LIC_FILES_CHKSUM")
            continue
        if target.startswith("${COMMON_LICENSE_DIR}/"):
            name = target.split("/", 1)[1]
            expected = COMMON_LICENSE_MD5.get(name)
            if expected is None:
                report.fail(f"{rel(path)}:{number}: common licence {name} is not known to this check; add its md5")
            elif expected != md5:
                report.fail(f"{rel(path)}:{number}: md5 of common licence {name} is {expected}, not {md5}")
            continue
        if target.startswith("${CARGO_VENDORING_DIRECTORY}/"):
            # A crate's licence file as bitbake unpacks it; generated and
            # checked against the crate sources by update-licenses --check.
            vendored += 1
            continue
        source = os.path.join(REPO, target)
        if not os.path.isfile(source):
            report.fail(f"{rel(path)}:{number}: licence file {target} does not exist in the repository")
            continue
        actual = lic_md5(source, int(params.get("beginline", 0)), int(params.get("endline", 0)))
        if actual != md5:
            lines = f" lines {params.get('beginline')}-{params.get('endline')}" if "beginline" in params else ""
            report.fail(f"{rel(path)}:{number}: LIC_FILES_CHKSUM for {target}{lines} is {md5}, the file gives "
                        f"{actual}; check the licence text (and beginline/endline if lines moved), then update it")
        else:
            report.ok(f"licence checksum of {target} ({rel(path)})")
    if vendored:
        report.ok(f"{vendored} crate licence checksums in {rel(path)}: checked by update-licenses --check")


# Kernel options the agent needs: in the fragment the layer applies
# (DISTRO_FEATURES "shoulder") and in the README's list.
KERNEL_FRAGMENT = os.path.join(LAYER, "recipes-kernel", "linux", "files", "shoulder.cfg")
KERNEL_OPTIONS = ("CONFIG_DRM", "CONFIG_FB", "CONFIG_INPUT_EVDEV", "CONFIG_INPUT_UINPUT", "CONFIG_CGROUP_BPF")


def check_kernel(report):
    print("kernel options")
    try:
        fragment = read_text(KERNEL_FRAGMENT)
        readme = read_text(os.path.join(LAYER, "README.md"))
    except OSError as err:
        report.fail(f"cannot read the kernel fragment or README: {err}")
        return
    set_options = dict(re.findall(r"^(CONFIG_[A-Z0-9_]+)=([ym])$", fragment, re.M))
    for option in KERNEL_OPTIONS:
        if option not in set_options:
            report.fail(f"{rel(KERNEL_FRAGMENT)} does not set {option} (=y or =m)")
        if f"`{option}" not in readme:
            report.fail(f"README.md, 'Kernel options', does not list {option}")
    for option in set_options:
        if f"`{option}" not in readme:
            report.fail(f"{rel(KERNEL_FRAGMENT)} sets {option}, which README.md, 'Kernel options', does not list")
    appends = glob.glob(os.path.join(LAYER, "**", "linux-*.bbappend"), recursive=True)
    for path in appends:
        text = read_text(path)
        if "bb.utils.contains('DISTRO_FEATURES', 'shoulder'" not in text or "file://shoulder.cfg" not in text:
            report.fail(f"{rel(path)} must add file://shoulder.cfg only with DISTRO_FEATURES 'shoulder'")
    if not appends:
        report.fail("no kernel bbappend applies recipes-kernel/linux/files/shoulder.cfg")
    else:
        report.ok(f"{len(set_options)} options in {rel(KERNEL_FRAGMENT)}, listed in the README, "
                  f"applied by {len(appends)} gated bbappend(s)")


def workspace_manifest():
    with open(os.path.join(REPO, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)


def check_recipes(recipes, report):
    print("recipes")
    used_files = set()
    manifest = workspace_manifest()
    version = manifest.get("workspace", {}).get("package", {}).get("version")
    for recipe in recipes:
        closure = metadata_closure(recipe, report)
        recipe_dir = os.path.dirname(recipe)
        names = recipe_names(recipe)
        search = [os.path.join(recipe_dir, d) for d in (names["BPN"], "files", "")]
        for path, text in closure:
            for _, name, _, value in assignments(text):
                if name.startswith("FILESEXTRAPATHS"):
                    for extra in value.split(":"):
                        extra = (extra.replace("${THISDIR}", os.path.dirname(path))
                                 .replace("${SHOULDER_LAYERDIR}", LAYER))
                        if extra and "${" not in extra:
                            search.insert(0, extra)
        units = []
        for path, text in closure:
            for number, arg in list(directives(text, "inherit")) + list(directives(text, "inherit_defer")):
                for cls in arg.split():
                    if cls.startswith("${@"):
                        # Conditional inherit: check the class names quoted in the
                        # expression (not the variable names passed to getVar).
                        for quoted in re.findall(r"(?<!\()'([a-z0-9_-]+)'", arg):
                            if quoted not in KNOWN_CLASSES:
                                report.fail(f"{rel(path)}:{number}: class '{quoted}' is not a known oe-core class")
                        break
                    if cls not in KNOWN_CLASSES:
                        report.fail(f"{rel(path)}:{number}: class '{cls}' is not a known oe-core class "
                                    "(typo? if it is new, add it to KNOWN_CLASSES after checking it exists)")
            for number, name, _, value in assignments(text):
                if name.startswith("SRC_URI") and "[" not in name:
                    for uri in value.split():
                        # Also file:// URIs quoted inside ${@...} expressions.
                        uri = uri.strip("'\",()")
                        if uri.startswith("file://"):
                            local = uri[len("file://"):].split(";")[0]
                            found = [d for d in search if os.path.isfile(os.path.join(d, local))]
                            if not found:
                                report.fail(f"{rel(path)}:{number}: file://{local} is in none of "
                                            f"{', '.join(rel(d) or '.' for d in search)}")
                            else:
                                used_files.add(os.path.join(found[0], local))
                elif name == "LIC_FILES_CHKSUM":
                    check_license(path, number, value, report)
                elif name.startswith("SYSTEMD_SERVICE"):
                    units += value.split()
                elif name == "PV" and version is not None:
                    base = value.split("+", 1)[0]
                    if base != version:
                        report.fail(f"{rel(path)}:{number}: PV {value} does not start with the workspace "
                                    f"version {version} (Cargo.toml [workspace.package]); update PV")
        for unit in units:
            if not any(os.path.isfile(os.path.join(d, unit)) for d in search):
                report.fail(f"{rel(recipe)}: SYSTEMD_SERVICE names {unit}, which is not in its files")
        report.ok(f"{rel(recipe)}: {len(closure) - 1} includes, local files and classes resolve")
    for path in sorted(glob.glob(os.path.join(LAYER, "recipes-*", "*", "files", "*"))):
        if path not in used_files:
            report.fail(f"{rel(path)} is not used by any recipe's SRC_URI: remove it or reference it")


def conf_defaults():
    """SHOULDER_* ??= defaults of the shoulder-agent-conf recipe."""
    path = os.path.join(LAYER, "recipes-shoulder", "shoulder-agent-conf", "shoulder-agent-conf_1.0.bb")
    return {name: value for _, name, op, value in assignments(read_text(path))
            if name.startswith("SHOULDER_") and op == "??="}


def render_agent_toml(template, variables):
    def toml_list(words):
        return "[" + ", ".join(f'"{w}"' for w in words) + "]"
    cas = ["/etc/shoulder/plant-ca/" + os.path.basename(c) for c in variables["SHOULDER_PLANT_CA"].split()]
    values = {
        "ENABLED": variables["SHOULDER_ENABLED"],
        "ALLOW_OFFERS": variables["SHOULDER_ALLOW_OFFERS"],
        "ALLOW_INVITATIONS": variables["SHOULDER_ALLOW_INVITATIONS"],
        "ALLOW_CONTROL": variables["SHOULDER_ALLOW_CONTROL"],
        "CAPTURE": f'"{variables["SHOULDER_CAPTURE"]}"',
        "CONTROL_GROUP": f'"{variables["SHOULDER_CONTROL_GROUP"]}"',
        "PLANT_CA": toml_list(cas),
        "ALLOWED_EXPERTS": toml_list(variables["SHOULDER_ALLOWED_EXPERTS"].split()),
    }
    return re.sub(r"@([A-Z_]+)@", lambda m: values.get(m.group(1), m.group(0)), template)


def flatten(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def check_agent_toml(report):
    print("agent.toml")
    template_path = os.path.join(LAYER, "recipes-shoulder", "shoulder-agent-conf", "files", "agent.toml")
    example_path = os.path.join(REPO, "agent", "agent.example.toml")
    template = read_text(template_path)
    defaults = conf_defaults()
    demo = dict(defaults, SHOULDER_ENABLED="true", SHOULDER_PLANT_CA="plant-ca.pem",
                SHOULDER_ALLOWED_EXPERTS="ca:3f0a5c917b22e4d8601faa93c74508b26e14dd79c0583ba19e27f64d8802cb15/cn:Service-Desk sha256:f74b7e4b772c0352b71adb38ad7dd4126d16ad0c38170a9381cf119f96ed7b50", SHOULDER_CONTROL_GROUP="kiosk")
    if not os.path.isfile(example_path):
        report.warn(f"{rel(example_path)} does not exist yet: agent.toml keys cannot be compared")
        example = None
    else:
        with open(example_path, "rb") as f:
            example = dict(flatten(tomllib.load(f)))
    for label, variables in (("recipe defaults", defaults), ("example bbappend values", demo)):
        text = render_agent_toml(template, variables)
        leftover = re.findall(r"^[^#\n]*?(@[A-Z_]+@)", text, re.MULTILINE)
        if leftover:
            report.fail(f"{rel(template_path)}: placeholders {', '.join(sorted(set(leftover)))} have no "
                        "SHOULDER_* variable in shoulder-agent-conf_1.0.bb")
            continue
        try:
            rendered = dict(flatten(tomllib.loads(text)))
        except tomllib.TOMLDecodeError as err:
            report.fail(f"{rel(template_path)} rendered with the {label} is not valid TOML: {err}")
            continue
        if example is not None:
            for key, value in rendered.items():
                if key not in example:
                    report.fail(f"{rel(template_path)}: key '{key}' is not in {rel(example_path)}; "
                                "the agent would refuse the file")
                elif type(value) is not type(example[key]):
                    report.fail(f"{rel(template_path)}: '{key}' is a {type(value).__name__} with the {label}, "
                                f"{rel(example_path)} has a {type(example[key]).__name__}")
        report.ok(f"renders to valid TOML with the {label}"
                  + (f", keys and types match {rel(example_path)}" if example is not None else ""))
        agent_parses(text, label, report)


def agent_binary():
    explicit = os.environ.get("SHOULDER_AGENT_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    built = os.path.join(target, "debug", "shoulder-agent")
    return built if os.access(built, os.X_OK) else None


def agent_parses(text, label, report):
    """Let the agent itself read the rendered file, when a build of it is at hand.

    `shoulder-agent fingerprint` loads the configuration first and then only
    reads the device key: with an empty state directory, a good file ends in
    the agent's "no device key" error and nothing is written anywhere.
    """
    binary = agent_binary()
    if binary is None:
        report.note("no shoulder-agent build found (target/debug or SHOULDER_AGENT_BIN): "
                    "the agent's own parser was not run on the rendered agent.toml")
        return
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state")
        text = text.replace('"/var/lib/shoulder', f'"{state}')
        for ca in re.findall(r'"(/etc/shoulder/plant-ca/[^"]+)"', text):
            local = os.path.join(tmp, os.path.basename(ca))
            with open(local, "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
            text = text.replace(f'"{ca}"', f'"{local}"')
        config = os.path.join(tmp, "agent.toml")
        with open(config, "w") as f:
            f.write(text)
        result = subprocess.run([binary, "fingerprint", "--config", config], capture_output=True, text=True,
                                timeout=60)
        output = (result.stdout + result.stderr).strip()
        if "no device key" in output and not os.path.exists(os.path.join(state, "device.key")):
            report.ok(f"{rel(binary) if binary.startswith(REPO) else binary} accepts agent.toml with the {label}")
        else:
            report.fail(f"shoulder-agent ({binary}) rejects agent.toml rendered with the {label}: {output}")


def check_units(report):
    print("systemd units")
    units = sorted(glob.glob(os.path.join(LAYER, "recipes-*", "*", "files", "*.service")))
    for unit in units:
        # Every setting is explained by a comment right above it.
        previous = ""
        for number, line in enumerate(read_text(unit).splitlines(), 1):
            if line.strip() and not line.startswith(("#", "[")) and not previous.startswith("#"):
                report.fail(f"{rel(unit)}:{number}: '{line}' has no comment above it saying why")
            previous = line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        report.note("systemd-analyze not installed: unit files not verified (apt-get install systemd)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for unit in units:
            text = read_text(unit)
            text = text.replace("@BINDIR@", tmp).replace("@SYSCONFDIR@", "/etc").replace("@KIOSK_ARGS@", "")
            name = os.path.basename(unit)
            for binary in re.findall(rf"{re.escape(tmp)}/([A-Za-z0-9_.-]+)", text):
                stub = os.path.join(tmp, binary)
                with open(stub, "w") as f:
                    f.write("#!/bin/sh\n")
                os.chmod(stub, 0o755)
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
            # All units are written before any is verified (they name each other).
        for unit in units:
            name = os.path.basename(unit)
            result = subprocess.run([analyze, "verify", "--man=no", os.path.join(tmp, name)],
                                    capture_output=True, text=True, timeout=60, cwd=tmp)
            problems = [line for line in (result.stdout + result.stderr).splitlines()
                        if name in line or result.returncode != 0]
            if result.returncode != 0 or problems:
                report.fail(f"{rel(unit)}: systemd-analyze verify: " + " | ".join(problems or ["failed"]))
                continue
            exposure = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                                       os.path.join(tmp, name)], capture_output=True, text=True, timeout=60)
            level = re.search(r"Overall exposure level for \S+: ([0-9.]+ \w+)", exposure.stdout)
            report.ok(f"{rel(unit)} passes systemd-analyze verify"
                      + (f"; exposure {level.group(1)}" if level else ""))


def check_kas(report):
    print("kas")
    files = sorted(glob.glob(os.path.join(LAYER, "kas", "*.yml")))
    try:
        import yaml
    except ModuleNotFoundError:
        report.note("PyYAML not installed: kas files not checked (scripts/check installs it)")
        return
    schema = validator = None
    try:
        import jsonschema
        import kas
        schema_path = os.path.join(os.path.dirname(kas.__file__), "schema-kas.json")
        with open(schema_path) as f:
            schema = json.load(f)
        validator = jsonschema.Draft7Validator(schema)
    except (ModuleNotFoundError, OSError):
        report.note("kas/jsonschema not installed: kas files checked for paths only")
    for path in files:
        try:
            with open(path) as f:
                config = yaml.safe_load(f)
        except yaml.YAMLError as err:
            report.fail(f"{rel(path)} is not valid YAML: {err}")
            continue
        if validator is not None:
            errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
            for err in errors:
                where = "/".join(str(p) for p in err.path) or "(top)"
                report.fail(f"{rel(path)}: {where}: {err.message}")
            if errors:
                continue
        for include in (config.get("header", {}).get("includes") or []):
            if isinstance(include, str) and not os.path.isfile(os.path.join(REPO, include)):
                report.fail(f"{rel(path)}: include {include} does not exist (paths are relative to the repository root)")
        for repo_id, repo in (config.get("repos") or {}).items():
            if repo is None or repo.get("url") is None:
                for layer in (repo or {}).get("layers") or {}:
                    if not os.path.isfile(os.path.join(REPO, layer, "conf", "layer.conf")):
                        report.fail(f"{rel(path)}: repo '{repo_id}' layer '{layer}' has no conf/layer.conf")
            elif repo.get("commit") is None:
                report.note(f"{rel(path)}: repo '{repo_id}' follows branch {repo.get('branch')} without a pinned commit")
        headers = "\n".join(str(v) for v in (config.get("local_conf_header") or {}).values())
        includes = config.get("header", {}).get("includes") or []
        if not includes and not re.search(r'^\s*SHOULDER_LOCAL_SRC\s*=\s*"\$\{SHOULDER_CHECKOUT\}"', headers, re.M):
            report.fail(f"{rel(path)}: a reference build must build the checkout it sits in: "
                        'SHOULDER_LOCAL_SRC = "${SHOULDER_CHECKOUT}" in local_conf_header')
        report.ok(f"{rel(path)}" + (" validates against kas " + kas.__version__ + "'s schema" if validator else ""))


def check_cargo_lock(report):
    print("Cargo.lock")
    listed = git("ls-files", "-z", "--", "Cargo.lock", "*/Cargo.lock")
    locks = [p for p in listed.stdout.decode().split("\0") if p.endswith("Cargo.lock")] or ["Cargo.lock"]
    for path in locks:
        with open(os.path.join(REPO, path), "rb") as f:
            lock = tomllib.load(f)
        foreign = [f"{p.get('name')} {p.get('version')} ({p['source']})" for p in lock.get("package", [])
                   if "source" in p and "crates.io" not in p["source"]]
        if foreign:
            report.fail(f"{path}: packages from sources the recipes do not fetch (only crates.io is turned into "
                        "crate:// entries): " + ", ".join(foreign) + "; publish them or vendor them into the tree")
        else:
            report.ok(f"{path}: every external package comes from crates.io")
    rust, crate = device_rust_version()
    if rust:
        needed = tuple(int(x) for x in (rust.split(".") + ["0", "0"])[:3])
        for release in layer_series():
            shipped = RELEASE_RUST.get(release)
            if shipped is None:
                report.fail(f"the layer claims {release}, whose Rust version this check does not know: "
                            "add it to RELEASE_RUST (meta/recipes-devtools/rust of that release)")
            elif needed > shipped:
                report.fail(f"{crate} needs Rust {rust} (rust-version), but {release}, which the layer claims, "
                            f"ships {'.'.join(map(str, shipped))}: see README.md, 'Yocto releases'")
            else:
                report.ok(f"{release} ships Rust {'.'.join(map(str, shipped))}, the recipes' crates need {rust}")
        for release in UNSUPPORTED_SERIES:
            shipped = RELEASE_RUST.get(release)
            if shipped is not None and needed <= shipped:
                report.warn(f"{release} ships Rust {'.'.join(map(str, shipped))}, enough for {rust}: "
                            "it could be claimed again (UNSUPPORTED_SERIES)")


def layer_series():
    """LAYERSERIES_COMPAT of the layer."""
    text = read_text(os.path.join(LAYER, "conf", "layer.conf"))
    for _, name, _, value in assignments(text):
        if name == f"LAYERSERIES_COMPAT_{COLLECTION}":
            return value.split()
    return []


# What the recipes build (CARGO_BUILD_FLAGS --package).
RECIPE_PACKAGES = ("shoulder-agent", "shoulder-kiosk")


def device_rust_version():
    """The highest rust-version among the packages the recipes build and
    the workspace crates they depend on (normal and build dependencies), and
    the crate that declares it."""
    ws = workspace_manifest().get("workspace", {})
    ws_rust = ws.get("package", {}).get("rust-version")
    ws_deps = ws.get("dependencies", {})
    manifests = {}
    for member in ws.get("members", []):
        path = os.path.join(REPO, member, "Cargo.toml")
        with open(path, "rb") as f:
            m = tomllib.load(f)
        manifests[m["package"]["name"]] = m
    best, best_crate = None, None
    todo, seen = list(RECIPE_PACKAGES), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in manifests:
            continue
        seen.add(name)
        m = manifests[name]
        rust = m["package"].get("rust-version")
        if isinstance(rust, dict):
            rust = ws_rust if rust.get("workspace") else None
        if rust:
            key = tuple(int(x) for x in (rust.split(".") + ["0", "0"])[:3])
            if best is None or key > best[0]:
                best, best_crate = (key, rust), name
        for section in ("dependencies", "build-dependencies"):
            for dep, spec in m.get(section, {}).items():
                is_path = isinstance(spec, dict) and ("path" in spec or (
                    spec.get("workspace") and isinstance(ws_deps.get(dep), dict) and "path" in ws_deps[dep]))
                if is_path:
                    todo.append(dep)
    return (best[1] if best else None), best_crate


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, timeout=60)


def check_srcrev(report, release):
    print("SRCREV")
    inc = os.path.join(LAYER, "recipes-shoulder", "include", "shoulder-source.inc")
    revs = [v for _, n, _, v in assignments(read_text(inc)) if n == "SHOULDER_SRCREV"]
    if len(revs) != 1 or not re.fullmatch(r"[0-9a-f]{40}", revs[0]):
        report.fail(f"{rel(inc)}: SHOULDER_SRCREV must be set once to a full 40-hex commit id")
        return
    rev = revs[0]
    if git("rev-parse", "--git-dir").returncode != 0:
        report.note("not a git checkout: SRCREV not checked")
        return
    if git("cat-file", "-e", f"{rev}^{{commit}}").returncode != 0:
        shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
        if shallow and not release:
            report.note(f"SHOULDER_SRCREV {rev[:12]} is not in this shallow clone: not checked")
        else:
            report.fail(f"SHOULDER_SRCREV {rev[:12]} is not a commit of this repository: pin one of its "
                        "commits with yocto-layer/scripts/set-srcrev")
        return
    if git("merge-base", "--is-ancestor", rev, "HEAD").returncode != 0:
        report.fail(f"SHOULDER_SRCREV {rev[:12]} is not an ancestor of HEAD: pin a commit of the branch")
        return
    listed = git("ls-files", "-z", "--", "Cargo.lock", "*/Cargo.lock")
    locks = [p for p in listed.stdout.decode().split("\0") if p.endswith("Cargo.lock")] or ["Cargo.lock"]
    differ = []
    for path in locks:
        pinned = git("show", f"{rev}:{path}")
        with open(os.path.join(REPO, path), "rb") as f:
            if pinned.returncode != 0 or pinned.stdout != f.read():
                differ.append(path)
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        message = (f"{', '.join(differ)} at SHOULDER_SRCREV {rev[:12]} {verb} from the working tree's, which the "
                   "crates include follows: a build of the pinned commit would miss crates. Commit the change, "
                   "then run yocto-layer/scripts/set-srcrev and commit that (README.md, 'Updating the pinned "
                   "commit')")
        report.fail(message)
    else:
        report.ok(f"SHOULDER_SRCREV {rev[:12]} is on this branch and has the same lock files")


def main(argv):
    parser = argparse.ArgumentParser(description="Consistency checks of the Shoulder Yocto layer.")
    parser.add_argument("--release", action="store_true",
                        help="also fail when SRCREV cannot be checked (shallow clone)")
    args = parser.parse_args(argv)
    report = Report()
    try:
        recipes = check_layer_conf(report) or []
        check_recipes(recipes, report)
        check_agent_toml(report)
        check_units(report)
        check_kernel(report)
        check_kas(report)
        check_cargo_lock(report)
        check_srcrev(report, args.release)
    except (OSError, ValueError, tomllib.TOMLDecodeError, subprocess.TimeoutExpired) as err:
        report.fail(f"check aborted: {err}")
    print(f"layer checks: {report.failures} failure(s), {report.warnings} warning(s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
