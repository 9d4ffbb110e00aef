#!/usr/bin/env python3
"""check-deps.py - every external command the project runs must be installed by
scripts/deps.sh or be part of Debian's Essential set.

Reads the commands that scripts/*.sh, scripts/lib/*.sh (sourced by them), .ci/run, the Makefile's recipes and the Rust tests
(tests/**/*.rs: Command::new("X"), find_program("X"), unpacked_program("X"), /bin/X paths, shell strings after
"-c" and shell scripts the tests write) call, and the COMMANDS table of scripts/deps.sh
(command -> Debian package). Fails when a command is

  * neither in COMMANDS nor provided by an Essential package (ESSENTIAL_COMMANDS below),
  * in COMMANDS with a package that deps.sh's PACKAGES does not install (and that is not
    Essential).

With dpkg available it also checks the table against the machine: each COMMANDS entry
that is on PATH must belong to the package the table names (dpkg -S) or, for a package
deps.sh unpacks instead of installing (its UNPACKED table), be in the unpacked tree; the Essential
packages' commands must all be in ESSENTIAL_COMMANDS (so the fixed list stays right on
another Debian release). `--static` skips the checks against the machine.

Commands run inside another root (after chroot, systemd-nspawn, nsenter) are that root's
business and are not counted. Words after `;`/`|` inside quoted text that is not shell
can be mistaken for commands: NOT_COMMANDS lists those, each with the reason.

Usage: scripts/check-deps.py [--static] [-v]     -v: print every command and where
"""

import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The commands of Debian 12's Essential packages (dpkg-query -W -f='${Package}
# ${Essential}\n', then dpkg -L of each: files in /bin, /sbin, /usr/bin, /usr/sbin). Fixed
# here so the check works before anything is installed; checked against dpkg when it is
# there. Alternatives (which, awk) are not Essential: awk comes from mawk, which is only
# "required".
ESSENTIAL_PACKAGES = """
base-files base-passwd bash bsdutils coreutils dash debianutils diffutils dpkg findutils
grep gzip hostname init-system-helpers libc-bin login ncurses-base ncurses-bin perl-base
sed sysvinit-utils tar util-linux
""".split()

ESSENTIAL_COMMANDS = set("""
[ add-shell addpart agetty arch b2sum base32 base64 basename basenc bash bashbug blkdiscard
blkid blkzone blockdev captoinfo cat chcon chcpu chgrp chmem chmod choom chown chroot chrt
cksum clear clear_console cmp comm cp csplit ctrlaltdel cut dash date dd deb-systemd-helper
deb-systemd-invoke delpart df diff diff3 dir dircolors dirname dmesg dnsdomainname
domainname dpkg dpkg-deb dpkg-divert dpkg-fsys-usrunmess dpkg-maintscript-helper
dpkg-query dpkg-realpath dpkg-split dpkg-statoverride dpkg-trigger du echo egrep env
expand expr factor faillog fallocate false fgrep find findfs findmnt flock fmt fold fsck
fsck.cramfs fsck.minix fsfreeze fstab-decode fstrim getconf getent getopt getty grep
groups gunzip gzexe gzip hardlink head hostid hostname i386 iconv iconvconfig id infocmp
infotocap install installkernel invoke-rc.d ionice ipcmk ipcrm ipcs ischroot isosize join
killall5 last lastb lastlog ld.so ldattach ldconfig ldd link linux32 linux64 ln locale
localedef logger login logname ls lsblk lscpu lsipc lslocks lslogins lsmem lsns mcookie
md5sum md5sum.textutils mesg mkdir mkfifo mkfs mkfs.bfs mkfs.cramfs mkfs.minix mknod
mkswap mktemp more mountpoint mv namei newgrp nice nisdomainname nl nohup nologin nproc
nsenter numfmt od partx paste pathchk perl perl5.36.0 pidof pinky pivot_root pldd pr
printenv printf prlimit ptx pwd rbash readlink readprofile realpath remove-shell rename.ul
renice reset resizepart rev rgrep rm rmdir rmt-tar rtcwake run-parts runcon runuser
savelog script scriptlive scriptreplay sdiff sed seq service setarch setpriv setsid
setterm sg sh sha1sum sha224sum sha256sum sha384sum sha512sum shred shuf sleep sort split
start-stop-daemon stat stdbuf stty su sulogin sum swaplabel switch_root sync tabs tac tail
tar tarcat taskset tee tempfile test tic timeout toe touch tput tr true truncate tset tsort
tty tzselect uclampset uname uncompress unexpand uniq unlink unshare update-alternatives
update-passwd update-rc.d update-shells users utmpdump vdir wall wc wdctl whereis
which.debianutils who whoami wipefs x86_64 xargs yes ypdomainname zcat zcmp zdiff zdump
zegrep zfgrep zforce zgrep zic zless zmore znew zramctl
""".split())

# bash builtins and keywords: never external here (kill, echo, printf, test, [ are
# builtins in bash; the scripts are bash).
BUILTINS = set("""
. : [ alias bg bind break builtin caller cd command compgen complete compopt continue
declare dirs disown echo enable eval exec exit export false fc fg getopts hash help history
jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly return set
shift shopt source suspend test times trap true type typeset ulimit umask unalias unset
wait
""".split())
KEYWORDS_BEFORE_COMMAND = {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time", "}"}
KEYWORDS_NO_COMMAND = {"for", "case", "select", "function", "in", "esac", "done", "fi", "[[", "]]", "))"}
# After these the rest of the command line runs in another root.
OTHER_ROOT = {"chroot", "systemd-nspawn", "nsenter"}
# Wrappers that run their arguments as a command on this host: options to skip.
WRAPPERS = {"sudo", "env", "nice", "nohup", "exec", "timeout", "setsid", "stdbuf",
            "taskset", "unshare", "xargs", "ionice", "prlimit", "command"}
# Their options that take the next word as a value.
VALUE_OPTIONS = {
    "env": {"-u", "--unset", "-C", "--chdir"},
    "sudo": {"-u", "-g"},
    "nice": {"-n"},
    "timeout": {"-s", "--signal", "-k", "--kill-after"},
    "unshare": {"--propagation", "--setgroups", "-S", "-G", "--wd", "-R", "--root"},
    "ionice": {"-c", "-n"},
    "xargs": {"-n", "-I", "-P", "-d", "-L", "-s", "-a"},
}

# Words that look like commands but are not (the reason in each comment).
NOT_COMMANDS = {
    "rstunnel": "the project's own binary (target/release, or installed by the test itself)",
}

# The COMMANDS "package" of the Rust toolchain, which deps.sh checks itself.
RUSTUP = "(rustup)"

COMMAND_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def deps_tables():
    """PACKAGES and COMMANDS of scripts/deps.sh."""
    text = open(os.path.join(ROOT, "scripts/deps.sh")).read()

    def array(name):
        m = re.search(r"^%s=\(\n(.*?)^\)" % name, text, re.M | re.S)
        if not m:
            sys.exit("check-deps: scripts/deps.sh has no %s=( ... ) table" % name)
        return [re.sub(r"#.*", "", l).strip() for l in m.group(1).splitlines()]

    packages = {l.split()[0] for l in array("PACKAGES") if l}
    unpacked = {}
    for line in array("UNPACKED"):
        if line:
            words = line.strip('"').split()
            unpacked[words[0]] = words[1]
    m = re.search(r"^UNPACK_ROOT=(\S+)$", text, re.M)
    unpack_root = m.group(1) if m else None
    commands = {}
    for line in array("COMMANDS"):
        if not line:
            continue
        words = line.strip('"').split()
        if len(words) != 2:
            sys.exit("check-deps: deps.sh COMMANDS: expected \"COMMAND PACKAGE\": %r" % line)
        commands[words[0]] = words[1]
    return packages, commands, unpacked, unpack_root


# ---------------------------------------------------------------------------------------
# Shell

class Word:
    def __init__(self):
        self.text = ""
        self.quoted = False  # any part quoted
        self.raw_quoted = []  # contents of quoted parts, for `bash -c '...'`


def split_shell(src):
    """Splits shell text into simple commands (lists of Words), recursing into $( ),
    backticks and heredocs fed to a shell. Quote-aware; approximate where bash is
    ambiguous, which is fine for finding command names."""
    commands = []
    current = []
    word = Word()
    heredocs = []  # (delimiter, strip_tabs, is_shell)
    case_depth = []  # stack: True while reading case patterns
    i, n = 0, len(src)

    def end_word():
        nonlocal word
        if word.text or word.quoted:
            current.append(word)
            # `case WORD in`: patterns follow, up to `)`, and again after each `;;`
            if (not word.quoted and word.text == "in" and len(current) >= 3
                    and current[-3].text == "case"
                    and all(w.text in KEYWORDS_BEFORE_COMMAND for w in current[:-3])):
                case_depth.append(True)
                current.clear()
        word = Word()

    def end_command():
        nonlocal current
        end_word()
        if current:
            commands.append(current)
        current = []

    def matching(start, open_c, close_c):
        depth, j = 1, start
        while j < n and depth:
            c = src[j]
            if c == "\\":
                j += 2
                continue
            if c == "#" and (j == start or src[j - 1] in " \t\n("):
                # A comment (an array's row notes): its apostrophes and parentheses are
                # prose, not quotes or nesting.
                j = src.find("\n", j)
                if j < 0:
                    return n
                continue
            if c == '"':
                j += 1
                while j < n and src[j] != '"':
                    j += 2 if src[j] == "\\" else 1
            elif c == "'":
                j = src.find("'", j + 1)
                if j < 0:
                    return n
            elif c == open_c:
                depth += 1
            elif c == close_c:
                depth -= 1
            j += 1
        return j

    while i < n:
        c = src[i]
        if c == "\\" and i + 1 < n:
            if src[i + 1] != "\n":
                word.text += src[i + 1]
            i += 2
            continue
        if c == "'":
            j = src.find("'", i + 1)
            j = n if j < 0 else j
            word.text += src[i + 1:j]
            word.quoted = True
            word.raw_quoted.append(src[i + 1:j])
            i = j + 1
            continue
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                if src[j] == "\\":
                    j += 1
                elif src.startswith("$(", j) and not src.startswith("$((", j):
                    k = matching(j + 2, "(", ")")
                    commands.extend(split_shell(src[j + 2:k - 1]))
                    j = k - 1
                j += 1
            word.text += src[i + 1:j]
            word.quoted = True
            word.raw_quoted.append(src[i + 1:j])
            i = j + 1
            continue
        if c == "#" and not word.text and not word.quoted:
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if src.startswith("$((", i):
            k = matching(i + 3, "(", ")")
            word.text += "$(())"
            i = k + 1
            continue
        if src.startswith("$(", i):
            k = matching(i + 2, "(", ")")
            commands.extend(split_shell(src[i + 2:k - 1]))
            word.text += "$()"
            i = k
            continue
        if src.startswith("${", i):
            k = matching(i + 2, "{", "}")
            word.text += src[i:k]
            i = k
            continue
        if c == "`":
            j = src.find("`", i + 1)
            j = n if j < 0 else j
            commands.extend(split_shell(src[i + 1:j]))
            word.text += "$()"
            i = j + 1
            continue
        if src.startswith("<<", i) and not src.startswith("<<<", i):
            end_word()
            j = i + 2
            strip = src.startswith("-", j)
            if strip:
                j += 1
            while j < n and src[j] in " \t":
                j += 1
            m = re.match(r"""['"]?([A-Za-z0-9_]+)['"]?""", src[j:])
            if m:
                first = current[0].text if current else ""
                heredocs.append((m.group(1), strip, first in ("bash", "sh")))
                i = j + m.end()
                continue
        if c == "\n":
            end_command()
            i += 1
            for delim, strip, is_shell in heredocs:
                body = []
                while i < n:
                    j = src.find("\n", i)
                    j = n if j < 0 else j
                    line = src[i:j]
                    i = j + 1
                    if (line.lstrip("\t") if strip else line) == delim:
                        break
                    body.append(line)
                text = "\n".join(body)
                if is_shell or re.match(r"#!\s*(/usr)?/bin/(env )?(ba)?sh\b", text):
                    commands.extend(split_shell(text))
            heredocs = []
            continue
        if src.startswith("((", i) and not word.text:
            i = matching(i + 2, "(", ")") + 1
            continue
        if c == "(" and re.match(r"^[A-Za-z_][A-Za-z0-9_]*\+?=$", word.text):
            # NAME=( ... ): an array's elements are data, not commands
            k = matching(i + 1, "(", ")")
            word.text += "(array)"
            i = k
            continue
        if c == "(" and case_depth and case_depth[-1] and not current and not word.text:
            i += 1  # `(pattern)` form of a case pattern
            continue
        if c in ";&|()":
            if c == ";" and src.startswith(";;", i):
                end_command()
                if case_depth:
                    case_depth[-1] = True
                i += 2
                continue
            if c == ")" and case_depth and case_depth[-1]:
                # the end of a case pattern: what was read is no command
                word = Word()
                current.clear()
                case_depth[-1] = False
                i += 1
                continue
            if c == "|" and case_depth and case_depth[-1]:
                word = Word()
                current.clear()
                i += 1
                continue
            end_command()
            i += 1
            continue
        if c in " \t":
            end_word()
            i += 1
            continue
        if word.text == "" and not word.quoted and c in "<>" or (
            word.text.isdigit() and c in "<>"):
            # a redirection: the operator and its target are no words
            j = i
            while j < n and src[j] in "<>&":
                j += 1
            while j < n and src[j] in " \t":
                j += 1
            target = Word()
            while j < n and src[j] not in " \t\n;|&()":
                if src[j] in "'\"":
                    k = src.find(src[j], j + 1)
                    j = n if k < 0 else k + 1
                else:
                    j += 1
            word = Word()
            i = j
            del target
            continue
        word.text += c
        i += 1
        if word.text == "esac" and (i >= n or src[i] in " \t\n;)"):
            if case_depth:
                case_depth.pop()
    end_command()
    # `case X in` at the end of a line
    return commands


def function_body(src, name):
    """The body of shell function `name`: the rest of its line for a one-line definition
    (`f() { ...; }`), else every line up to the `}` at the definition's own indentation.
    Functions defined inside an indented block (a subshell's helpers) end there, not at the
    first `}` in column 0, which would take in the functions after them."""
    m = re.search(r"^([ \t]*)(?:function\s+)?%s\s*\(\)\s*\{(.*)$" % re.escape(name), src, re.M)
    if not m:
        return None
    indent, first = m.group(1), m.group(2)
    if re.search(r"\}\s*(#.*)?$", first):
        return first
    end = re.compile(r"^%s\}" % re.escape(indent), re.M).search(src, m.end())
    return src[m.end():end.start()] if end else src[m.end():]


def functions_in(src):
    """Shell functions defined in `src`, and those that run their arguments ("$@")."""
    names = set(re.findall(r"(?:^|[;{&|]|\s)(?:function\s+)?([A-Za-z_][A-Za-z0-9_-]*)\s*\(\)\s*\{", src, re.M))
    names |= set(re.findall(r"^\s*function\s+([A-Za-z_][A-Za-z0-9_-]*)", src, re.M))
    runners = {}
    for name in names:
        body = function_body(src, name)
        if body is None:
            continue
        run = re.search(r'^\s*(if\s+!?\s*)?"\$@"', body, re.M)
        if run:
            # the arguments it shifts away before running "$@" are not the command
            before = body[:run.start()]
            runners[name] = sum(int(n or 1) for n in re.findall(r"\bshift(?:\s+(\d+))?\b", before))
    return names, runners


def commands_in_shell(src, where, found, functions=frozenset(), runners=None):
    local_functions, local_runners = functions_in(src)
    functions = set(functions) | local_functions
    runners = dict(runners or {})
    runners.update(local_runners)
    for cmd in split_shell(src):
        command_words(list(cmd), where, found, functions, runners)


def command_words(words, where, found, functions, runners):
    """Notes the command that the simple command `words` runs, and what it runs in turn."""
    while words:
        w = words[0]
        t = w.text
        if not w.quoted and re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=", t):
            words.pop(0)
        elif not w.quoted and t in KEYWORDS_BEFORE_COMMAND:
            words.pop(0)
        else:
            break
    if not words:
        return
    first = words[0]
    name = first.text
    if not name or name in KEYWORDS_NO_COMMAND:
        return
    note(name, where, found, functions)
    rest = words[1:]
    if name in OTHER_ROOT:
        return
    if name in WRAPPERS:
        # the wrapped command: the first word that is no option, assignment or number
        skip_next = False
        for k, w in enumerate(rest):
            t = w.text
            if skip_next:
                skip_next = False
                continue
            if t in VALUE_OPTIONS.get(name, ()):
                skip_next = True
                continue
            if (t.startswith("-") or re.match(r"^[0-9.]+[smhd]?$", t) or t == "--"
                    or (name == "env" and "=" in t)):
                continue
            command_words(rest[k:], where, found, functions, runners)
            break
    elif name == "ip" and len(rest) >= 4 and rest[0].text == "netns" and rest[1].text == "exec":
        command_words(rest[3:], where, found, functions, runners)
    elif name in runners:
        command_words(rest[runners[name]:], where, found, functions, runners)
    # bash -c 'script' anywhere in the arguments
    for k in range(len(words) - 2):
        if words[k].text in ("bash", "sh") and not words[k].quoted and words[k + 1].text == "-c":
            commands_in_shell(words[k + 2].text, where + " (bash -c)", found, functions, runners)


def note(name, where, found, functions):
    if not name or "$" in name:
        return
    if name.startswith("/"):
        if not re.match(r"^(/usr)?/s?bin/", name):
            return
        name = os.path.basename(name)
    if "/" in name or not COMMAND_NAME.match(name) or name.isdigit():
        return
    if name in functions or name in BUILTINS:
        return
    found.setdefault(name, set()).add(where)


# ---------------------------------------------------------------------------------------
# Makefile and Rust

def makefile_commands(found):
    text = open(os.path.join(ROOT, "Makefile")).read()
    variables = dict(re.findall(r"^([A-Z_]+)\s*\?=\s*(\S+)\s*$", text, re.M))
    recipes = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("\t"):
            recipes.append(line[1:])
    # Make-level shell snippets assigned to variables and used in recipes.
    for m in re.finditer(r"^([A-Z_]+_SH)\s*=\s*\\\n((?:.*\\\n)*.*)$", text, re.M):
        recipes.append(m.group(2))
    recipes += re.findall(r"\$\(shell .*", text)
    script = "\n".join(recipes)
    script = script.replace("\\\n", " ")
    script = re.sub(r"^[@-]+", "", script, flags=re.M)

    # $(CARGO), $(INSTALL): the commands they default to; any other make variable or
    # function is a word that is no command.
    def expand(m):
        value = variables.get(m.group(1), "")
        return value if COMMAND_NAME.match(value) else "$MAKEVAR"
    script = script.replace("$$", "\0")  # the shell's own $
    script = re.sub(r"\$\(([A-Za-z_]+)\)", expand, script)
    for _ in range(3):
        script = re.sub(r"\$\((?!shell )[a-z]+ [^()]*\)", "$MAKEFN", script)
    script = script.replace("$(shell ", "$(").replace("\0", "$")
    commands_in_shell(script, "Makefile", found)


def rust_strings(src):
    """String literals of Rust source, unescaped roughly (\\n, \\", line continuations)."""
    out = []
    for m in re.finditer(r'(?<![A-Za-z0-9_\'])"((?:[^"\\]|\\.)*)"', src, re.S):
        s = m.group(1)
        s = re.sub(r"\\\n\s*", "", s)
        s = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)
        s = s.replace("\\n", "\n").replace('\\"', '"').replace("\\t", "\t").replace("\\\\", "\\")
        out.append((m.start(), s))
    return out


def rust_commands(path, found):
    where = os.path.relpath(path, ROOT)
    src = open(path).read()
    for m in re.finditer(r'(?:Command::new|find_program|unpacked_program)\(\s*"([^"]+)"\s*\)', src):
        note(m.group(1), where, found, frozenset())
    strings = rust_strings(src)
    for pos, s in strings:
        for b in re.findall(r"(?<![A-Za-z0-9_./-])((?:/usr)?/s?bin/[A-Za-z0-9_.+-]+)", s):
            note(b, where, found, frozenset())
        if re.match(r"#!\s*(/usr)?/bin/(env )?(ba)?sh\b", s):
            commands_in_shell(s, where + " (script)", found)
    # "sh", "-c", "SCRIPT" and dir.write("x.sh", "SCRIPT")
    for i in range(len(strings) - 1):
        if strings[i][1] == "-c" and i > 0 and strings[i - 1][1] in ("sh", "bash"):
            commands_in_shell(strings[i + 1][1], where + " (sh -c)", found)
        if strings[i][1].endswith(".sh") and re.search(
                r"\.write\(\s*$", src[max(0, strings[i][0] - 40):strings[i][0]]):
            commands_in_shell(strings[i + 1][1], where + " (" + strings[i][1] + ")", found)


# ---------------------------------------------------------------------------------------

def collect():
    found = {}
    shell_files = sorted(
        os.path.join("scripts", f) for f in os.listdir(os.path.join(ROOT, "scripts"))
        if f.endswith(".sh")) + [".ci/run"]
    libraries = sorted(
        os.path.join("scripts", "lib", f)
        for f in os.listdir(os.path.join(ROOT, "scripts", "lib")) if f.endswith(".sh"))
    text = {rel: open(os.path.join(ROOT, rel)).read() for rel in shell_files + libraries}
    # A script that sources scripts/lib/X.sh (`. "$ROOT/scripts/lib/X.sh"`) may call X's
    # functions; X is read with the functions of the scripts that source it (log, die).
    # A library may source another (chroot-test.sh sources rootfs.sh): a script gets the
    # functions of every library it reaches that way.
    direct = {rel: set(re.findall(r'^\s*(?:\.|source)\s+"?\$ROOT/(scripts/lib/[\w.-]+\.sh)"?',
                                  text[rel], re.M)) & set(libraries)
              for rel in shell_files + libraries}
    sources = {}
    for rel in shell_files + libraries:
        reached, todo = set(), list(direct[rel])
        while todo:
            lib = todo.pop()
            if lib not in reached:
                reached.add(lib)
                todo.extend(direct[lib])
        sources[rel] = reached
    for rel in shell_files:
        functions = set()
        for lib in sources[rel]:
            functions |= functions_in(text[lib])[0]
        commands_in_shell(text[rel], rel, found, functions)
    for lib in libraries:
        functions = set()
        for other in sources[lib]:
            functions |= functions_in(text[other])[0]
        for rel in shell_files:
            if lib in sources[rel]:
                functions |= functions_in(text[rel])[0]
        commands_in_shell(text[lib], lib, found, functions)
    makefile_commands(found)
    for base, _, files in os.walk(os.path.join(ROOT, "tests")):
        for f in sorted(files):
            if f.endswith(".rs"):
                rust_commands(os.path.join(base, f), found)
    return found


def provides(pkg, cmd):
    """None if `cmd` on this machine comes from the installed package `pkg` or from one of
    its direct (pre-)dependencies (python3 -> python3-minimal), also through alternatives
    (awk -> mawk, cc -> gcc), else why not."""
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Depends}, ${Pre-Depends}", pkg],
                            capture_output=True, text=True)
    if status.returncode != 0 or not status.stdout.startswith("install ok installed"):
        return "package %s is not installed (run scripts/deps.sh)" % pkg
    family = {pkg} | {re.split(r"[\s:(]", d.strip())[0]
                      for d in re.split(r"[,|]", status.stdout.split("\t", 1)[1]) if d.strip()}
    # every path on the way from the command's name to the real file
    paths = []
    for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin"):
        p = os.path.join(d, cmd)
        seen = 0
        while os.path.lexists(p) and seen < 10:
            paths.append(p)
            if not os.path.islink(p):
                break
            p = os.path.join(os.path.dirname(p), os.readlink(p))
            seen += 1
    owners = set()
    for p in paths:
        for q in {p, p[4:] if p.startswith("/usr/") else "/usr" + p}:
            r = subprocess.run(["dpkg-query", "-S", q], capture_output=True, text=True)
            if r.returncode == 0:
                owners |= {o.strip() for o in r.stdout.split(":")[0].split(",")}
    if owners & family:
        return None
    if not paths:
        return "%s is not in /usr/bin, /usr/sbin, /bin or /sbin although %s is installed" % (cmd, pkg)
    return "%s comes from %s here, not from %s or its dependencies" % (
        cmd, " ".join(sorted(owners)) or "no package", pkg)


# Shell the extractor must read right: (snippet, the commands it must find). Run first
# on every call, so a change that breaks the reading fails here and not silently.
SELF_TESTS = [
    ('check "logrotate -d accepts it" logrotate -d -s "$st" "$conf"\n'
     'check() {\n    local what=$1\n    shift\n    if "$@" >"$LOG" 2>&1; then :; fi\n}',
     {"logrotate"}),
    ('case "$1" in\n    debian) printf x ;;\n    redhat|suse) echo y ;;\nesac\ngzip -t f',
     {"gzip"}),
    ('unit_dir() { case "$1" in debian) echo a ;; redhat) echo b ;; esac; }', set()),
    ("PACKAGES=(\n    libssl-dev  # why\n    pkg-config\n)\nx=$(objdump -p \"$b\" | awk '{ print }')",
     {"objdump", "awk"}),
    # An array's comments are prose: an apostrophe or a parenthesis there neither opens a
    # quote nor ends the array; a quoted parenthesis in $( ) is no nesting.
    ("PACKAGES=(\n    make  # OpenSSL's build (1)\n    tar  # b) c\n)\n"
     "y=$(sed -e \"s/(/[/\" f)\nls",
     {"sed", "ls"}),
    ('chroot "$root" apt-get install -y make\nunshare --mount --propagation private -- tcpdump -n',
     {"chroot", "unshare", "tcpdump"}),
    ("bash -c 'set -e; zcat \"$1\" | groff -man' _ f\nip netns exec ns1 ss -ltn",
     {"bash", "zcat", "groff", "ip", "ss"}),
    ('for ((i = 0; i < 3; i++)); do sleep 1; done\nenv -u MAKEFLAGS FOO=1 make -C d',
     {"sleep", "env", "make"}),
    ('cat >"$d/fake" <<\'EOF\'\n#!/bin/sh\ntrap x USR1\nstty raw\nEOF\n'
     'cat <<EOF\nnot a command; neither\nEOF\necho "a; b (c) | d"',
     {"cat", "stty"}),
]


def self_test():
    failed = 0
    for snippet, wanted in SELF_TESTS:
        found = {}
        commands_in_shell(snippet, "self-test", found)
        if set(found) != wanted:
            failed += 1
            print("check-deps: self-test: %r\n  wanted %s\n  found  %s"
                  % (snippet, sorted(wanted), sorted(found)), file=sys.stderr)
    return failed


def main(argv):
    static = "--static" in argv
    verbose = "-v" in argv
    if self_test():
        return 1
    packages, table, unpacked, unpack_root = deps_tables()
    found = collect()
    errors = []
    for cmd in sorted(found):
        if cmd in NOT_COMMANDS:
            continue
        where = ", ".join(sorted(found[cmd]))
        if cmd in table:
            pkg = table[cmd]
            status = "deps.sh: %s" % pkg
            if (pkg not in packages and pkg not in ESSENTIAL_PACKAGES and pkg != RUSTUP
                    and pkg not in unpacked):
                errors.append("%s: COMMANDS says package %s, which deps.sh's PACKAGES does not install (used in %s)"
                              % (cmd, pkg, where))
        elif cmd in ESSENTIAL_COMMANDS:
            status = "Essential"
        else:
            status = "MISSING"
            errors.append("%s: used in %s, but neither in deps.sh's COMMANDS nor in an Essential package: "
                          "add \"%s PACKAGE\" to COMMANDS (and PACKAGE to PACKAGES)" % (cmd, where, cmd))
        if verbose:
            print("%-22s %-26s %s" % (cmd, status, where))
    for cmd in sorted(set(table) - set(found)):
        # not an error: a row may be there for a script on its way (or used only inside
        # a chroot); said so it does not rot unnoticed
        print("check-deps: note: %s (COMMANDS) is used by none of the files checked" % cmd)
    if not static and shutil.which("dpkg-query"):
        # Each row against the installed package (after scripts/deps.sh has run).
        for cmd, pkg in sorted(table.items()):
            if pkg == RUSTUP:
                if not shutil.which(cmd):
                    errors.append("%s: not on PATH (Rust toolchain: see scripts/deps.sh)" % cmd)
                continue
            if pkg in unpacked:
                # not on PATH on purpose: the tests run it from the unpacked tree
                prog = os.path.join(unpack_root or "", pkg, unpacked[pkg])
                if os.path.basename(prog) != cmd:
                    errors.append("%s: COMMANDS names unpacked %s, whose UNPACKED program is %s"
                                  % (cmd, pkg, unpacked[pkg]))
                elif not os.access(prog, os.X_OK):
                    errors.append("%s: %s is not there (run scripts/deps.sh)" % (cmd, prog))
                continue
            why = provides(pkg, cmd)
            if why:
                errors.append("%s: COMMANDS row is wrong: %s" % (cmd, why))
        r = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Essential}\\n"],
                           capture_output=True, text=True)
        essential_here = sorted(l.split()[0] for l in r.stdout.splitlines() if l.endswith(" yes"))
        for pkg in essential_here:
            files = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True).stdout
            for f in files.splitlines():
                if re.match(r"^(/usr)?/s?bin/[^/]+$", f) and os.path.basename(f) not in ESSENTIAL_COMMANDS:
                    errors.append("%s (Essential package %s here) is not in ESSENTIAL_COMMANDS: update the list"
                                  % (os.path.basename(f), pkg))
    if errors:
        for e in errors:
            print("check-deps: " + e, file=sys.stderr)
        print("check-deps: %d problem(s), %d commands checked" % (len(errors), len(found)), file=sys.stderr)
        return 1
    print("check-deps: %d external commands, each installed by scripts/deps.sh or Essential" % len(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
