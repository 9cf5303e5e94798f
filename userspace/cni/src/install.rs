//! `weft-cni install [--dir DIR]` puts the plugin into a CNI plugin
//! directory as `weft`, the name runtimes look up for `"type": "weft"`;
//! `weft-cni conflist NETWORK [--socket PATH]` prints a network
//! configuration list for a weft network:
//!
//! ```json
//! {
//!   "cniVersion": "1.0.0",
//!   "name": "blue",
//!   "plugins": [
//!     {
//!       "type": "weft",
//!       "network": "blue",
//!       "socket": "/var/lib/weft/agent.sock",
//!       "capabilities": {"portMappings": true, "aliases": true, "ips": true, "mac": true}
//!     }
//!   ]
//! }
//! ```
//!
//! `cniVersion` 1.0.0: podman 4.3 and containerd 1.6 speak up to 1.0.0
//! (podman ignores a 1.1.0 list); STATUS and GC need 1.1.0.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde_json::json;

use crate::config::{DEFAULT_SOCKET, SUPPORTED_VERSIONS};

/// The conventional CNI plugin directory.
pub const DEFAULT_DIR: &str = "/opt/cni/bin";
/// The plugin's file name there (its `type`).
pub const PLUGIN_NAME: &str = "weft";

const USAGE: &str = "\
weft-cni: weft's CNI plugin (CNI 0.4.0, 1.0.0, 1.1.0)

Container runtimes run it with CNI_COMMAND set; by hand:
  weft-cni install [--dir DIR]      copy this binary to DIR/weft (default /opt/cni/bin)
  weft-cni conflist NETWORK [--socket PATH] [--cni-version V]
                                    print a network configuration list for NETWORK
  weft-cni version                  print the CNI versions it speaks
";

/// Runs a subcommand; returns the exit status.
pub fn cli(args: &[String]) -> i32 {
    let result = match args.first().map(String::as_str) {
        Some("install") => option(&args[1..], "--dir")
            .map(|dir| PathBuf::from(dir.unwrap_or_else(|| DEFAULT_DIR.to_owned())))
            .and_then(|dir| install(&dir))
            .map(|path| println!("installed the weft CNI plugin as {}", path.display())),
        Some("conflist") => conflist_cli(&args[1..]),
        Some("version" | "--version") => {
            println!(
                "weft-cni {}: CNI {}",
                env!("CARGO_PKG_VERSION"),
                SUPPORTED_VERSIONS.join(", ")
            );
            Ok(())
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown arguments {args:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("weft-cni: error: {e}");
            2
        }
    }
}

/// The value of `--name VALUE` in `args` (all `args` must be such pairs,
/// besides the ones `cli` took).
fn option(args: &[String], name: &str) -> Result<Option<String>, String> {
    match args {
        [] => Ok(None),
        [flag, value] if flag == name => Ok(Some(value.clone())),
        _ => Err(format!("expected nothing or {name} VALUE, got {args:?}")),
    }
}

fn conflist_cli(args: &[String]) -> Result<(), String> {
    let Some((network, rest)) = args.split_first() else {
        return Err("conflist needs a weft network name".into());
    };
    let mut socket = DEFAULT_SOCKET.to_owned();
    let mut version = "1.0.0".to_owned();
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--socket" => socket = value,
            "--cni-version" if SUPPORTED_VERSIONS.contains(&value.as_str()) => version = value,
            "--cni-version" => {
                return Err(format!(
                    "cniVersion {value}: use one of {}",
                    SUPPORTED_VERSIONS.join(", ")
                ));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    let list = conflist(network, Path::new(&socket), &version);
    println!(
        "{}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
    Ok(())
}

/// A network configuration list attaching containers to weft network
/// `network` through the agent on `socket`.
pub fn conflist(network: &str, socket: &Path, cni_version: &str) -> serde_json::Value {
    json!({
        "cniVersion": cni_version,
        "name": network,
        "plugins": [{
            "type": PLUGIN_NAME,
            "network": network,
            "socket": socket,
            "capabilities": {"portMappings": true, "aliases": true, "ips": true, "mac": true},
        }],
    })
}

/// Copies the running binary to `dir/weft` (creating `dir`), replacing
/// what is there in one rename, so a runtime never runs half a file.
pub fn install(dir: &Path) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let target = dir.join(PLUGIN_NAME);
    let partial = dir.join(format!(".{PLUGIN_NAME}.{}", std::process::id()));
    let copy = || -> std::io::Result<()> {
        fs::copy(&exe, &partial)?;
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))?;
        fs::rename(&partial, &target)
    };
    copy().map_err(|e| {
        let _ = fs::remove_file(&partial);
        format!(
            "cannot install {} as {}: {e}",
            exe.display(),
            target.display()
        )
    })?;
    Ok(target)
}
