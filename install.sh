#!/usr/bin/env bash
# Installs couchdb-events into a virtualenv and sets it up for CouchDB. ./install.sh --help
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXAMPLE="$PROJECT/local.ini.example"
PLACEHOLDER_URL="http://admin:PASSWORD@127.0.0.1:5984/"

usage() {
    cat <<'EOF'
Usage: ./install.sh [OPTIONS]

Installs couchdb-events into a Python virtualenv (an editable install: this folder stays
its home) and prints the sections to add to CouchDB's local.ini, with the real paths
filled in (progress goes to stderr, the sections to stdout).

Options:
  --venv DIR          the virtualenv to create or reuse (default: .venv in this folder)
  --dev               also install the test tools (the package's [test] extras)
  --reinstall         run pip even when the virtualenv is already up to date
  --with-pouchdb      install PouchDB Server (npm ci) for the demo and the tests;
                      needs node and npm
  --couchdb-url URL   a CouchDB to set up, with a server admin's credentials, like
                      http://admin:PASSWORD@127.0.0.1:5984/ (default: $COUCHDB_URL):
                      checks that it answers, creates the events and workers
                      databases and makes them writable and readable by server
                      admins only (couchdb-events setup), and puts the URL into
                      the sections
  --events-db NAME    the events database (default: events)
  --workers-db NAME   the workers database (default: workers)
  --work-dir DIR      where workers run (default: ~/.cache/couchdb-events of the
                      user CouchDB runs as)
  --merge-into FILE   merge the sections into FILE (CouchDB's local.ini, or a new file
                      in its local.d/ folder) instead of printing them; sections
                      already there are replaced, settings set in them are kept, and
                      FILE.bak keeps the previous content
  --demo              after installing, run the e-mail example end to end
                      (couchdb-events demo; implies --with-pouchdb)
  -h, --help          show this help

Environment:
  PYTHON              the Python (3.10 or newer) to create the virtualenv with
                      (default: python3)
  COUCHDB_URL         as --couchdb-url

Examples:
  ./install.sh --demo
  ./install.sh > couchdb-events.ini
  ./install.sh --couchdb-url http://admin:PASSWORD@127.0.0.1:5984/ \
      --merge-into /opt/couchdb/etc/local.ini

Works with CouchDB 1.1 - 2.2 (os_daemons); for CouchDB 2.3+ and 3.x run
`couchdb-events serve` behind nginx or haproxy instead (see local.ini.example).
EOF
}

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}
usage_error() {
    printf 'install.sh: %s (see ./install.sh --help)\n' "$*" >&2
    exit 2
}

# A path as the user would like to read it: relative to the current folder when inside it.
show_path() {
    case "$1" in
        "$PWD"/*) printf '%s' "${1#"$PWD"/}" ;;
        *) printf '%s' "$1" ;;
    esac
}

absolute() {
    case "$1" in
        /*) printf '%s' "$1" ;;
        \~) printf '%s' "$HOME" ;;
        \~/*) printf '%s/%s' "$HOME" "${1#"~/"}" ;;
        *) printf '%s/%s' "$PWD" "${1#./}" ;;
    esac
}

# -- options ---------------------------------------------------------------------------------
VENV="$PROJECT/.venv"
DEV=0
REINSTALL=0
WITH_POUCHDB=0
DEMO=0
COUCHDB_URL="${COUCHDB_URL:-}"
EVENTS_DB=""
WORKERS_DB=""
WORK_DIR=""
MERGE_INTO=""

while (($#)); do
    option="$1"
    value=""
    has_value=0
    case "$option" in
        --*=*)
            value="${option#*=}"
            option="${option%%=*}"
            has_value=1
            ;;
    esac
    case "$option" in
        --venv | --couchdb-url | --events-db | --workers-db | --work-dir | --merge-into)
            if ((!has_value)); then
                (($# >= 2)) || usage_error "$option needs a value"
                value="$2"
                shift
            fi
            [[ -n "$value" ]] || usage_error "$option needs a value"
            ;;
        -h | --help | --dev | --reinstall | --with-pouchdb | --demo)
            ((!has_value)) || usage_error "$option takes no value"
            ;;
    esac
    case "$option" in
        -h | --help)
            usage
            exit 0
            ;;
        --venv) VENV="$(absolute "$value")" ;;
        --dev) DEV=1 ;;
        --reinstall) REINSTALL=1 ;;
        --with-pouchdb) WITH_POUCHDB=1 ;;
        --couchdb-url) COUCHDB_URL="$value" ;;
        --events-db) EVENTS_DB="$value" ;;
        --workers-db) WORKERS_DB="$value" ;;
        --work-dir) WORK_DIR="$(absolute "$value")" ;;
        --merge-into) MERGE_INTO="$(absolute "$value")" ;;
        --demo)
            DEMO=1
            WITH_POUCHDB=1
            ;;
        *) usage_error "unknown option: $option" ;;
    esac
    shift
done
VENV="${VENV%/}"

# -- what this machine has -------------------------------------------------------------------
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 ||
    die "$PY not found: couchdb-events needs Python 3.10 or newer (install python3, or name one with PYTHON=/path/to/python3)"
py_version="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" ||
    die "$PY does not run: couchdb-events needs Python 3.10 or newer (name another with PYTHON=/path/to/python3)"
if [[ ! "$py_version" =~ ^3\.([0-9]+)$ ]] || ((BASH_REMATCH[1] < 10)); then
    die "couchdb-events needs Python 3.10 or newer; $PY is Python $py_version (name another with PYTHON=/path/to/python3)"
fi

if ((WITH_POUCHDB)); then
    for tool in node npm; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found: PouchDB Server (for --with-pouchdb and --demo) needs Node.js and npm; install them (Debian/Ubuntu: apt-get install nodejs npm) and run again"
    done
fi

# Helpers in Python, run with the project folder importable (for its config checks) and with
# settings passed in the environment (so no password shows in a process list).
py_helper() {
    env PYTHONPATH="$PROJECT" PYTHONDONTWRITEBYTECODE=1 \
        CE_PROJECT="$PROJECT" CE_EXAMPLE="$EXAMPLE" CE_VENV="$VENV" \
        CE_COUCHDB_URL="$COUCHDB_URL" CE_EVENTS_DB="$EVENTS_DB" CE_WORKERS_DB="$WORKERS_DB" \
        CE_WORK_DIR="$WORK_DIR" CE_MERGE_INTO="$MERGE_INTO" CE_PLACEHOLDER_URL="$PLACEHOLDER_URL" \
        "$PY" -
}

# -- check everything that can be checked before installing ----------------------------------
[[ -f "$EXAMPLE" ]] || die "$EXAMPLE is missing: run install.sh from a complete copy of couchdb-events"

py_helper <<'EOF' || exit 1
import os, sys
from couchdb_events.config import Config
from couchdb_events.errors import ConfigError

settings = {key: os.environ[f"CE_{key.upper()}"] for key in ("couchdb_url", "events_db", "workers_db", "work_dir")}
try:
    Config.from_settings({key: value for key, value in settings.items() if value})
except ConfigError as exc:
    sys.exit(f"install.sh: error: {exc}")
EOF

case "$VENV" in
    *[[:space:]\"\']*)
        message="the virtualenv path '$VENV' contains a space or a quote: CouchDB splits the [os_daemons] command on spaces and cannot start it; choose another with --venv DIR"
        if [[ -n "$MERGE_INTO" ]]; then die "$message"; fi
        warn "$message"
        ;;
esac

if [[ -n "$MERGE_INTO" ]]; then
    if [[ -e "$MERGE_INTO" ]]; then
        [[ -f "$MERGE_INTO" ]] || die "--merge-into $MERGE_INTO: not a file"
        [[ -w "$MERGE_INTO" ]] || die "--merge-into $MERGE_INTO: not writable (run as CouchDB's user, or with sudo)"
    else
        [[ -d "$(dirname "$MERGE_INTO")" ]] || die "--merge-into $MERGE_INTO: its folder does not exist"
    fi
fi

if [[ -e "$VENV" && ! -x "$VENV/bin/python" ]]; then
    if [[ ! -d "$VENV" ]] || [[ -n "$(ls -A "$VENV")" ]]; then
        die "$VENV exists and is not a virtualenv: remove it, or choose another with --venv DIR"
    fi
fi

# Checks that CouchDB answers, before anything is installed. Exits 1 with a message (the URL
# shown without its password) on any failure.
check_couchdb() {
    py_helper <<'EOF'
import base64, json, os, sys, urllib.error, urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit
from couchdb_events.config import Config, redact_url

config = Config.from_settings({
    key: value
    for key, value in (
        ("couchdb_url", os.environ["CE_COUCHDB_URL"]),
        ("events_db", os.environ["CE_EVENTS_DB"]),
        ("workers_db", os.environ["CE_WORKERS_DB"]),
    )
    if value
})
shown = redact_url(config.couchdb_url)
parts = urlsplit(config.couchdb_url)
headers = {"Accept": "application/json"}
if parts.username is not None or parts.password is not None:
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
netloc = parts.netloc.rpartition("@")[2]
base = urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def fail(message):
    print(f"install.sh: error: {message}", file=sys.stderr)
    sys.exit(1)


def say(message):
    print(f"==> {message}", file=sys.stderr)


def call(method, path=""):
    request = urllib.request.Request(base + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=config.couchdb_timeout) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(
            f"CouchDB does not answer at {shown} ({reason}): is it running, and is the URL "
            "(--couchdb-url or COUCHDB_URL) right?"
        )
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return status, doc


def why(status, doc):
    if isinstance(doc, dict) and doc.get("error"):
        return f"{status} {doc.get('error')}: {doc.get('reason', '')}".rstrip(": ")
    return f"HTTP {status}"


status, doc = call("GET")
if status == 401:
    fail(f"CouchDB at {shown} rejects the credentials ({why(status, doc)}): check the admin name and password in the URL")
if status != 200 or not isinstance(doc, dict):
    fail(f"{shown} does not answer like a CouchDB ({why(status, doc)})")
version = str(doc.get("version", "?"))
if "couchdb" in doc:
    say(f"CouchDB {version} answers at {shown}")
    number = tuple(int(n) if n.isdigit() else 0 for n in version.split(".")[:2])
    if number >= (2, 3):
        say(
            f"note: CouchDB {version} hosts no os_daemons: run `couchdb-events serve` behind "
            "nginx or haproxy instead of the [os_daemons] and [httpd_global_handlers] sections"
        )
elif "express-pouchdb" in doc:
    say(f"PouchDB Server {version} answers at {shown}")
else:
    vendor = doc.get("vendor")
    name = vendor.get("name") if isinstance(vendor, dict) else None
    say(f"{name or 'a CouchDB-compatible server'} {version} answers at {shown}")
EOF
}

if [[ -n "$COUCHDB_URL" ]]; then
    check_couchdb
fi

# -- the virtualenv --------------------------------------------------------------------------
VENV_PY="$VENV/bin/python"
if [[ -x "$VENV_PY" ]]; then
    venv_version="$("$VENV_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" ||
        die "the virtualenv $VENV is broken (its python does not run): remove it and run install.sh again"
    if [[ ! "$venv_version" =~ ^3\.([0-9]+)$ ]] || ((BASH_REMATCH[1] < 10)); then
        die "the virtualenv $VENV has Python $venv_version; couchdb-events needs 3.10 or newer: remove it, or choose another with --venv DIR"
    fi
    say "using the virtualenv $(show_path "$VENV") (Python $venv_version)"
else
    "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
        die "$PY cannot create virtualenvs (no venv/ensurepip module): on Debian/Ubuntu, apt-get install python3-venv"
    say "creating virtualenv $(show_path "$VENV") (Python $py_version)"
    "$PY" -m venv "$VENV" >&2 || die "could not create the virtualenv $VENV"
fi
VENV="$(cd "$VENV" && pwd)"
VENV_PY="$VENV/bin/python"

# -- the package -----------------------------------------------------------------------------
# A stamp in the virtualenv records what was installed: this project, its packaging files (as a
# hash) and the extras. When it matches and the package imports from here, pip is skipped.
STAMP="$VENV/.couchdb-events-install"
extras=""
((DEV)) && extras="test"
wanted="$(
    "$VENV_PY" - "$PROJECT" <<'EOF'
import hashlib, sys
from pathlib import Path

project = Path(sys.argv[1])
digest = hashlib.sha256()
for name in ("setup.cfg", "pyproject.toml", "setup.py"):
    path = project / name
    if path.is_file():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
print(f"{project} {digest.hexdigest()}")
EOF
)"
up_to_date=0
if ((!REINSTALL)) && [[ -f "$STAMP" && -x "$VENV/bin/couchdb-events" ]]; then
    read -r stamp_project stamp_hash stamp_extras <"$STAMP" || true
    location="$("$VENV_PY" -c 'import os, couchdb_events; print(os.path.realpath(couchdb_events.__file__))' 2>/dev/null)" || location=""
    if [[ "$stamp_project $stamp_hash" == "$wanted" && "$location" == "$(cd "$PROJECT" && pwd -P)/"* ]] &&
        [[ -z "$extras" || "${stamp_extras:-}" == "$extras" ]]; then
        up_to_date=1
    fi
fi

if ((up_to_date)); then
    say "couchdb-events is already installed in $(show_path "$VENV") (up to date; --reinstall to run pip anyway)"
else
    "$VENV_PY" -m pip --version >/dev/null 2>&1 ||
        die "the virtualenv $VENV has no pip: remove it and run install.sh again"
    # Editable installs of a pyproject.toml project need pip 21.3 or newer.
    if ! "$VENV_PY" -c 'import sys, pip; sys.exit(tuple(int(n) for n in pip.__version__.split(".")[:2]) < (21, 3))' 2>/dev/null; then
        say "upgrading pip in the virtualenv"
        "$VENV_PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 ||
            die "could not upgrade pip in $VENV (see pip's messages above)"
    fi
    target="$PROJECT"
    [[ -n "$extras" ]] && target="${PROJECT}[${extras}]"
    say "installing couchdb-events${extras:+ with the [$extras] extras} into $(show_path "$VENV") (pip install -e)"
    rm -f "$STAMP"
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e "$target" >&2 ||
        die "pip could not install couchdb-events (see its messages above)"
    printf '%s %s\n' "$wanted" "$extras" >"$STAMP"
fi
say "installed: $("$VENV/bin/couchdb-events" --version) ($(show_path "$VENV")/bin/couchdb-events)"

# -- PouchDB Server --------------------------------------------------------------------------
if ((WITH_POUCHDB)); then
    # npm ci also applies tests/pouchdb-patches (CouchDB behaviour PouchDB Server lacks).
    if [[ -f "$PROJECT/node_modules/pouchdb-server/bin/pouchdb-server" ]] &&
        grep -q 'req.body.selector' "$PROJECT/node_modules/express-pouchdb/lib/routes/changes.js"; then
        say "PouchDB Server is already installed (node_modules)"
    else
        [[ -f "$PROJECT/package-lock.json" ]] ||
            die "package-lock.json is missing in $PROJECT: npm ci needs it"
        say "installing PouchDB Server (npm ci in the project folder; this takes a minute or two)"
        (cd "$PROJECT" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
            die "npm ci failed (see its messages above)"
    fi
fi

# -- CouchDB's databases ---------------------------------------------------------------------
# `couchdb-events setup` checks that the credentials are a server admin's, creates the databases
# when missing and lets only server admins write (and read) them: worker documents are code that
# runs on this machine. The URL travels in the environment, never on a command line.
if [[ -n "$COUCHDB_URL" ]]; then
    setup_args=()
    [[ -n "$EVENTS_DB" ]] && setup_args+=(--events-db "$EVENTS_DB")
    [[ -n "$WORKERS_DB" ]] && setup_args+=(--workers-db "$WORKERS_DB")
    if ! COUCHDB_EVENTS_COUCHDB_URL="$COUCHDB_URL" \
        "$VENV/bin/couchdb-events" setup ${setup_args[@]+"${setup_args[@]}"} | sed 's/^/==> /' >&2; then
        die "could not set up the databases (see the message above)"
    fi
    say "the ${EVENTS_DB:-events} and ${WORKERS_DB:-workers} databases are now writable (and readable) by CouchDB server admins only"
fi

# -- the configuration -----------------------------------------------------------------------
# Prints the sections of local.ini.example filled in, or merges them into $CE_MERGE_INTO.
configure() {
    py_helper <<'EOF'
import os, re, shutil, sys
from pathlib import Path

from couchdb_events import __version__

OWNED = ("couchdb_events", "couchdb_events_interpreters")  # replaced whole
SHARED = {"os_daemons": "couchdb_events", "httpd_global_handlers": "_events"}  # one key each
HEADER = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def key_line(key):
    return re.compile(r"^\s*" + re.escape(key) + r"\s*=")


def commented_key_line(key):
    return re.compile(r"^\s*;\s*" + re.escape(key) + r"\s*=")


def parse(text):
    """(preamble lines, [[name, lines]]): every line kept, newline included."""
    preamble, sections = [], []
    for line in text.splitlines(keepends=True):
        match = HEADER.match(line)
        if match:
            sections.append([match.group(1).strip(), [line]])
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return preamble, sections


def values(lines):
    """The key = value settings (not the comments) of a section's lines."""
    found = {}
    for line in lines[1:]:
        if line.lstrip().startswith((";", "#")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found[key.strip()] = value.strip()
    return found


def set_key(lines, key, value):
    """Set key = value in a section: in place of the key's line, else of its commented default."""
    new = f"{key} = {value}\n"
    for pattern in (key_line(key), commented_key_line(key)):
        for i, line in enumerate(lines[1:], 1):
            if pattern.match(line):
                lines[i] = new
                # Drop any later duplicates of the key: CouchDB would take the last one.
                lines[i + 1 :] = [x for x in lines[i + 1 :] if not key_line(key).match(x)]
                return
    end = len(lines)
    while end > 1 and not lines[end - 1].strip():
        end -= 1
    lines.insert(end, new)


def trim(lines):
    end = len(lines)
    while end > 1 and not lines[end - 1].strip():
        end -= 1
    return lines[:end], lines[end:]


example_text = Path(os.environ["CE_EXAMPLE"]).read_text(encoding="utf-8")
example_text = example_text.replace("@PREFIX@", os.environ["CE_VENV"])
_, example = parse(example_text)
blocks = {name: trim(lines)[0] for name, lines in example}

given = {
    key: os.environ[f"CE_{key.upper()}"]
    for key in ("couchdb_url", "events_db", "workers_db", "work_dir")
    if os.environ[f"CE_{key.upper()}"]
}
for key, value in given.items():
    set_key(blocks["couchdb_events"], key, value)

target = os.environ["CE_MERGE_INTO"]
if not target:
    out = [
        f"; couchdb-events {__version__}: sections for CouchDB's local.ini (CouchDB 1.1 - 2.2).\n",
        "; Add them to local.ini (or put them in a new file in CouchDB's local.d/ folder) and\n",
        "; restart CouchDB; ./install.sh --merge-into FILE does it for you. local.ini.example\n",
        "; explains them.\n",
    ]
    for name, _ in example:
        out += ["\n", *blocks[name]]
    sys.stdout.write("".join(out))
    final = values(blocks["couchdb_events"])
else:
    path = Path(target)
    existed = path.exists()
    old_text = path.read_text(encoding="utf-8") if existed else ""
    preamble, sections = parse(old_text)
    appended = []
    for name, _ in example:
        mine = [s for s in sections if s[0] == name]
        if name in OWNED:
            kept = {}
            for section in mine:
                kept.update(values(section[1]))
            block = list(blocks[name])
            for key, value in kept.items():
                if name != "couchdb_events" or key not in given:
                    set_key(block, key, value)
            if mine:
                _, blank = trim(mine[0][1])
                if not blank and mine[0] is not sections[-1]:
                    blank = ["\n"]
                mine[0][1] = block + blank
                sections = [s for s in sections if s[0] != name or s is mine[0]]
            else:
                appended.append(block)
        else:
            key = SHARED[name]
            value = values(blocks[name])[key]
            if mine:
                set_key(mine[0][1], key, value)
                for section in mine[1:]:
                    section[1] = [x for x in section[1] if not key_line(key).match(x)]
            else:
                appended.append(blocks[name])
    text = "".join(preamble) + "".join(line for _, lines in sections for line in lines)
    if text and not text.endswith("\n"):
        text += "\n"
    for block in appended:
        if text and not text.endswith("\n\n"):
            text += "\n"
        text += "".join(block)
    shown = str(path)
    if text == old_text:
        print(f"==> {shown} already has the couchdb-events sections: left as it is", file=sys.stderr)
    else:
        if existed:
            shutil.copy2(path, str(path) + ".bak")
        with open(path, "w", encoding="utf-8") as handle:  # in place: keeps owner and mode
            handle.write(text)
        names = ", ".join(f"[{name}]" for name, _ in example)
        if existed:
            print(f"==> merged {names} into {shown} (the previous content is in {shown}.bak)", file=sys.stderr)
        else:
            print(f"==> wrote {names} to {shown}", file=sys.stderr)
    merged = {name: lines for name, lines in parse(text)[1]}
    final = values(merged["couchdb_events"])

url = final.get("couchdb_url", "")
if url == os.environ["CE_PLACEHOLDER_URL"]:
    print(
        "install.sh: warning: couchdb_url holds a placeholder: put a CouchDB admin's name and "
        "password in it (or run again with --couchdb-url URL)",
        file=sys.stderr,
    )
elif target and "@" in url and not existed:
    print(f"==> {target} holds a password: let only CouchDB's user read it", file=sys.stderr)
EOF
}

if [[ -n "$MERGE_INTO" ]]; then
    configure
elif ((DEMO)); then
    : # the demo's output is what the user asked for; the sections are one command away
else
    say "the sections for CouchDB's local.ini (CouchDB 1.1 - 2.2) follow"
    configure
    say "done: add them to local.ini and restart CouchDB (or run again with --merge-into FILE)"
fi

# -- the demo --------------------------------------------------------------------------------
if ((DEMO)); then
    # The demo keeps its data in .couchdb-events/ of the folder it runs in: the project folder.
    demo_args=(demo)
    [[ -n "$EVENTS_DB" ]] && demo_args+=(--events-db "$EVENTS_DB")
    [[ -n "$WORKERS_DB" ]] && demo_args+=(--workers-db "$WORKERS_DB")
    [[ -n "$WORK_DIR" ]] && demo_args+=(--work-dir "$WORK_DIR")
    say "running the demo: $(show_path "$VENV")/bin/couchdb-events demo"
    status=0
    if [[ -n "$COUCHDB_URL" ]]; then
        (cd "$PROJECT" && COUCHDB_EVENTS_COUCHDB_URL="$COUCHDB_URL" "$VENV/bin/couchdb-events" "${demo_args[@]}") ||
            status=$?
    else
        (cd "$PROJECT" && env -u COUCHDB_EVENTS_COUCHDB_URL "$VENV/bin/couchdb-events" "${demo_args[@]}") ||
            status=$?
    fi
    ((status == 0)) || die "the demo failed (exit status $status)"
    say "next, for a CouchDB 1.1 - 2.2: ./install.sh prints the sections for its local.ini, and"
    say "  ./install.sh --couchdb-url http://admin:PASSWORD@127.0.0.1:5984/ --merge-into /path/to/local.ini"
    say "  creates the databases and puts the sections there"
fi
