//! The Debian package (issue 19): `debian/build.sh --dev` packages the debug build; lintian
//! finds no error in it; systemd-analyze accepts its unit; and it holds the binary, the
//! configuration as a conffile, the hardened unit, the docs and the help text.
//!
//! `tests/run.sh` installs cargo-deb, lintian and systemd-analyze; without them this test
//! fails and says what to install (it never skips).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}): tests/run.sh installs it"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn package() -> PathBuf {
    let built = run(root().join("debian/build.sh").to_str().expect("UTF-8 path"), &["--dev"]);
    assert!(built.status.success(), "debian/build.sh --dev failed:\n{}", text(&built));
    let dir = root().join("target/debian");
    let version = env!("CARGO_PKG_VERSION");
    std::fs::read_dir(&dir)
        .expect("target/debian")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("usher_{version}-"))))
        .unwrap_or_else(|| panic!("no usher_{version}-*.deb in {}", dir.display()))
}

#[test]
fn the_package_holds_what_it_should_passes_lintian_and_its_unit_verifies() {
    let deb = package();
    let deb_path = deb.to_str().expect("UTF-8 path");

    // What is in it.
    let listing = text(&run("dpkg-deb", &["--contents", deb_path]));
    for (path, mode) in [
        ("./usr/bin/usher", "-rwxr-xr-x"),
        ("./etc/usher/usher.toml", "-rw-r--r--"),
        ("./usr/lib/systemd/system/usher.service", "-rw-r--r--"),
        ("./usr/share/doc/usher/README.md", "-rw-r--r--"),
        ("./usr/share/doc/usher/usher-help.txt", "-rw-r--r--"),
        ("./usr/share/doc/usher/copyright", "-rw-r--r--"),
    ] {
        assert!(
            listing.lines().any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} ({mode}) is not in the package:\n{listing}"
        );
    }
    let conffiles = text(&run("dpkg-deb", &["--info", deb_path, "conffiles"]));
    assert_eq!(conffiles.trim(), "/etc/usher/usher.toml", "the configuration is a conffile: an upgrade keeps edits");

    // lintian: warnings are allowed (no man page yet; the help text stands in), errors not.
    let lint = run("lintian", &["--fail-on", "error", "--tag-display-limit", "0", deb_path]);
    assert!(lint.status.success(), "lintian found errors:\n{}", text(&lint));

    // The unit as packaged, verified. systemd-analyze checks that each command exists, and
    // /usr/bin/usher is not installed on the machine that runs the tests: the copy it checks
    // points at the packaged binary instead (its presence at /usr/bin is checked above).
    let dir = support::TempDir::new("deb");
    let extract = dir.path().join("root");
    let extracted = run("dpkg-deb", &["--extract", deb_path, extract.to_str().expect("UTF-8 path")]);
    assert!(extracted.status.success(), "{}", text(&extracted));
    let unit = std::fs::read_to_string(extract.join("usr/lib/systemd/system/usher.service")).expect("the unit");
    for line in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=131072",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    assert!(!unit.contains("\nAmbientCapabilities="), "no capability: the shipped configuration listens on 8080");
    let binary = extract.join("usr/bin/usher");
    let checked = dir.path().join("usher.service");
    std::fs::write(&checked, unit.replace("/usr/bin/usher", binary.to_str().expect("UTF-8 path"))).expect("write");
    let verify = run("systemd-analyze", &["verify", checked.to_str().expect("UTF-8 path")]);
    // Its exit status is the verdict; what it prints (a warning about the machine's own
    // units, say) is shown, not judged.
    eprintln!("systemd-analyze verify: {}", text(&verify));
    assert!(verify.status.success(), "systemd-analyze verify:\n{}", text(&verify));

    // The packaged binary is the one built, and its configuration is valid as shipped.
    let config = extract.join("etc/usher/usher.toml");
    let check = run(binary.to_str().expect("UTF-8 path"), &["check-config", config.to_str().expect("UTF-8 path")]);
    assert!(check.status.success(), "the shipped configuration: {}", text(&check));
}
