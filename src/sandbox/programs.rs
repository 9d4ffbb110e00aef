//! The files the kernel opens for execution to run an `exec` program (`Chain`): the
//! program found as `execvp` finds it (`find_program`), the interpreter of a `#!` line
//! (`env` and its NAME on PATH), an ELF file's dynamic loader. A leaf of `sandbox`: it
//! reads file heads only, and must not grant, check or apply anything.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The files the kernel opens for execution to run an `exec` program: the program, the
/// interpreter its `#!` line names (and, for `#!/usr/bin/env NAME`, NAME as found on
/// PATH), an ELF file's dynamic loader, in turn; and what could not be followed, for a
/// warning at startup.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub(super) files: Vec<PathBuf>,
    pub(super) problems: Vec<String>,
}

/// More than any real program needs (script → env → interpreter → loader).
const MAX_CHAIN: usize = 8;

pub(super) fn program_chain(program: &Path) -> Chain {
    let mut chain = Chain::default();
    let Some(first) = find_program(program).filter(|p| p.exists()) else {
        let bare = !program.as_os_str().as_encoded_bytes().contains(&b'/');
        chain.problems.push(format!(
            "exec {} is not found{}, so nothing is allowed for it and its sessions will fail",
            program.display(),
            if bare { " on PATH" } else { "" }
        ));
        return chain;
    };
    let mut queue = std::collections::VecDeque::from([first]);
    while let Some(path) = queue.pop_front() {
        if chain.files.len() >= MAX_CHAIN || chain.files.contains(&path) {
            continue;
        }
        let (next, problem) = interpreters(&path);
        chain.files.push(path);
        chain.problems.extend(problem);
        queue.extend(next);
    }
    chain
}

/// Where `execvp` (and so `Command`, and `env`) finds `name`: a name with a slash as it
/// is; a bare name in the first PATH directory holding an executable file of that name
/// (PATH of this process, which `exec` programs inherit; glibc's `/bin:/usr/bin` without
/// one).
pub fn find_program(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Some(name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| {
            // An empty PATH entry is the current directory.
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            dir.join(name)
        })
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What the kernel (or `env`) opens next to run `path`, and what could not be followed.
fn interpreters(path: &Path) -> (Vec<PathBuf>, Option<String>) {
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    if read.is_err() {
        return (Vec::new(), None); // not readable now: execve will say why
    }
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_whitespace();
        let Some(interp) = words.next().map(PathBuf::from) else {
            return (Vec::new(), None);
        };
        if interp.file_name().is_none_or(|n| n != "env") {
            return (vec![interp], None);
        }
        // `env [-S] [-i] [NAME=VALUE…] PROGRAM`: the program is looked up on PATH.
        let Some(name) = words.find(|w| !w.starts_with('-') && !w.contains('=')) else {
            return (vec![interp], None);
        };
        return match find_program(Path::new(name)) {
            Some(found) => (vec![interp, found], None),
            None => (
                vec![interp],
                Some(format!(
                    "the `#!{}` line of {} names {name}, which is not found on PATH, so the script cannot run",
                    text.trim(),
                    path.display()
                )),
            ),
        };
    }
    match elf_interp(&head) {
        Elf::Other | Elf::Static => (Vec::new(), None),
        Elf::Interp(loader) => (vec![loader], None),
        Elf::Unparsed => (
            Vec::new(),
            Some(format!(
                "{} is an ELF file whose dynamic loader could not be read from its header, so the loader is not allowed and the program may not start",
                path.display()
            )),
        ),
    }
}

/// What an ELF header says about the dynamic loader.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Elf {
    /// Not an ELF file (data, or a `#!` script handled before).
    Other,
    /// No `PT_INTERP`: a static program.
    Static,
    Interp(PathBuf),
    /// An ELF file whose program headers are not within the bytes read, or malformed.
    Unparsed,
}

/// `PT_INTERP` of an ELF file's first bytes, 32- or 64-bit, either byte order.
fn elf_interp(head: &[u8]) -> Elf {
    if !head.starts_with(b"\x7fELF") {
        return Elf::Other;
    }
    elf_program_headers(head).unwrap_or(Elf::Unparsed)
}

fn elf_program_headers(head: &[u8]) -> Option<Elf> {
    const PT_INTERP: u64 = 3;
    let wide = match head.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match head.get(5)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let uint = |at: usize, size: usize| -> Option<u64> {
        let bytes = head.get(at..at.checked_add(size)?)?;
        let mut v = 0u64;
        for i in 0..size {
            let b = if big { bytes[i] } else { bytes[size - 1 - i] };
            v = v << 8 | u64::from(b);
        }
        Some(v)
    };
    let word = if wide { 8 } else { 4 };
    let at = |v: u64| usize::try_from(v).ok();
    // ELF64: e_phoff 0x20, e_phentsize 0x36, e_phnum 0x38; ELF32: 0x1c, 0x2a, 0x2c.
    let (phoff, phentsize, phnum) = if wide {
        (uint(0x20, 8)?, uint(0x36, 2)?, uint(0x38, 2)?)
    } else {
        (uint(0x1c, 4)?, uint(0x2a, 2)?, uint(0x2c, 2)?)
    };
    for i in 0..phnum {
        let ph = at(phoff.checked_add(i.checked_mul(phentsize)?)?)?;
        if uint(ph, 4)? != PT_INTERP {
            continue;
        }
        // p_offset and p_filesz: ELF64 at 8 and 32, ELF32 at 4 and 16.
        let (offset, size) = if wide {
            (uint(ph + 8, word)?, uint(ph + 32, word)?)
        } else {
            (uint(ph + 4, word)?, uint(ph + 16, word)?)
        };
        let (offset, size) = (at(offset)?, at(size)?);
        let raw = head.get(offset..offset.checked_add(size)?)?;
        let raw = raw.split(|&b| b == 0).next()?;
        return Some(Elf::Interp(PathBuf::from(std::str::from_utf8(raw).ok()?)));
    }
    Some(Elf::Static)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testing::{config, executable, scratch};
    use crate::sandbox::{check, plan, Right};

    /// `/bin/sh` is a dynamically linked ELF file on every system the tests run on: its
    /// loader is found and is an existing file.
    #[test]
    fn the_dynamic_loader_of_a_program_is_found() {
        let sh = Path::new("/bin/sh").canonicalize().unwrap();
        let (next, problem) = interpreters(&sh);
        assert_eq!(problem, None);
        assert_eq!(next.len(), 1, "{next:?}");
        assert!(next[0].is_absolute() && next[0].exists(), "{next:?}");
        assert_eq!(elf_interp(b"\x7fELF\x01\x01"), Elf::Unparsed);
        assert_eq!(elf_interp(b"#!/bin/sh\n"), Elf::Other);
    }

    /// An ELF header with one `PT_INTERP` program header naming `/lib/ld.so.1`, in the
    /// layout of `wide` (64-bit) or not, and `big`-endian or not.
    fn elf_with_interp(wide: bool, big: bool) -> Vec<u8> {
        let put = |buf: &mut Vec<u8>, at: usize, size: usize, v: u64| {
            for i in 0..size {
                let shift = 8 * if big { size - 1 - i } else { i };
                buf[at + i] = (v >> shift) as u8;
            }
        };
        let mut head = vec![0u8; 256];
        head[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1 + wide as u8, 1 + big as u8]);
        let (phoff, phentsize) = if wide { (64, 56) } else { (52, 32) };
        let interp = b"/lib/ld.so.1\0";
        let at = 160;
        head[at..at + interp.len()].copy_from_slice(interp);
        // (offset, size) of e_phoff, e_phentsize, e_phnum, and of the program header's
        // p_type (PT_INTERP = 3), p_offset and p_filesz, in each layout.
        let fields: [(usize, usize); 6] = if wide {
            [
                (0x20, 8),
                (0x36, 2),
                (0x38, 2),
                (64, 4),
                (64 + 8, 8),
                (64 + 32, 8),
            ]
        } else {
            [
                (0x1c, 4),
                (0x2a, 2),
                (0x2c, 2),
                (52, 4),
                (52 + 4, 4),
                (52 + 16, 4),
            ]
        };
        let values = [phoff, phentsize, 1, 3, at as u64, interp.len() as u64];
        for ((offset, size), value) in fields.into_iter().zip(values) {
            put(&mut head, offset, size, value);
        }
        head
    }

    /// 32-bit and big-endian programs get their loader too (armhf, i386 multiarch, s390x).
    #[test]
    fn every_elf_layout_names_its_loader() {
        for wide in [false, true] {
            for big in [false, true] {
                assert_eq!(
                    elf_interp(&elf_with_interp(wide, big)),
                    Elf::Interp(PathBuf::from("/lib/ld.so.1")),
                    "wide {wide}, big {big}"
                );
            }
        }
        // Program headers beyond what was read: said at startup, not silently denied.
        let mut cut = elf_with_interp(true, false);
        cut.truncate(100);
        assert_eq!(elf_interp(&cut), Elf::Unparsed);
        let dir = scratch("elf");
        let file = dir.join("cut");
        std::fs::write(&file, &cut).unwrap();
        let (next, problem) = interpreters(&file);
        assert!(next.is_empty());
        assert!(problem
            .unwrap()
            .contains("dynamic loader could not be read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A script with `text` in a scratch directory of its own, and its chain.
    fn script_chain(label: &str, text: &str) -> (PathBuf, PathBuf, Chain) {
        let dir = scratch(label);
        let script = dir.join("s");
        executable(&script, text);
        let chain = program_chain(&script);
        (dir, script, chain)
    }

    #[test]
    fn a_script_names_its_interpreter() {
        let (dir, script, chain) = script_chain("script", "#!/bin/sh -e\necho hi\n");
        assert_eq!(
            interpreters(&script),
            (vec![PathBuf::from("/bin/sh")], None)
        );
        // The script, the shell, and the shell's loader.
        assert_eq!(chain.files.len(), 3, "{chain:?}");
        assert_eq!(chain.files[1], PathBuf::from("/bin/sh"));
        assert!(chain.problems.is_empty(), "{chain:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `#!/usr/bin/env NAME`: NAME is found on PATH, as env finds it, and allowed with
    /// its own loader; a NAME env cannot find is a startup warning naming the service.
    #[test]
    fn an_env_script_gets_the_program_env_runs() {
        let (dir, _, chain) = script_chain("env", "#!/usr/bin/env -S sh -e\necho hi\n");
        let sh = find_program(Path::new("sh")).expect("sh on PATH");
        assert!(
            chain.files.contains(&PathBuf::from("/usr/bin/env")),
            "{chain:?}"
        );
        assert!(chain.files.contains(&sh), "{chain:?}");
        // script, env, sh, and the loader (shared by env and sh).
        assert!(chain.files.len() >= 4, "{chain:?}");
        assert!(chain.problems.is_empty(), "{chain:?}");

        let missing = dir.join("m");
        executable(&missing, "#!/usr/bin/env rstunnel-no-such-interpreter\n");
        let text = format!(
            "client = yes\n[s]\naccept = 1\nexec = {}\n",
            missing.display()
        );
        let plan = plan(&config(&text), None);
        assert!(
            plan.warnings.iter().any(|w| w.starts_with("Service [s]: ")
                && w.contains("rstunnel-no-such-interpreter, which is not found on PATH")),
            "{:?}",
            plan.warnings
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `exec = sh` is found on PATH as `Command` finds it: granted, and the reload check
    /// accepts the configuration that started; a name not on PATH is a warning.
    #[test]
    fn a_bare_program_name_is_looked_up_on_path() {
        let start = config("client = yes\n[s]\naccept = 1\nexec = sh\n");
        let plan = plan(&start, None);
        let sh = find_program(Path::new("sh"))
            .unwrap()
            .canonicalize()
            .unwrap();
        assert!(
            plan.grants
                .iter()
                .any(|g| g.path == sh && g.right == Right::Exec),
            "{plan:?}"
        );
        assert_eq!(check(&plan, &start, None), Ok(()));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        let lost = config("client = yes\n[s]\naccept = 1\nexec = rstunnel-no-such-program\n");
        let warnings = crate::sandbox::plan(&lost, None).warnings;
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("exec rstunnel-no-such-program is not found on PATH")),
            "{warnings:?}"
        );
    }
}
