//! The container image under podman: built with `deploy/image/build-local.sh` from the binary
//! cargo built for the tests, and run with the settings of `deploy/deployment.yaml`.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};

/// Runs podman with `args`; the output, whatever the exit status.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("podman runs")
}

/// Runs podman with `args` and panics with its stderr unless it succeeds; its stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image built from the test binary, removed on drop.
pub struct Image {
    pub tag: String,
}

impl Image {
    /// `deploy/image/build-local.sh` with the debug binary cargo built for this test, tagged
    /// uniquely so tests in parallel (and other checkouts) do not share it.
    pub fn build(name: &str) -> Image {
        let tag = format!("localhost/headless-dns-test:{name}-{}", std::process::id());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/image/build-local.sh");
        let out = Command::new(&script)
            .args([env!("CARGO_BIN_EXE_headless-dns"), &tag])
            .output()
            .expect("build-local.sh runs");
        assert!(out.status.success(), "build-local.sh: {}", String::from_utf8_lossy(&out.stderr));
        Image { tag }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "--force", &self.tag]);
    }
}

/// A container, removed (killed if running) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `podman run --detach` with `flags` before the image and `args` after it. Always with
    /// `--runtime runc` and bounded ulimits (what podman needs on cgroups-v1 CI machines).
    pub fn run(name: &str, flags: &[String], image: &Image, args: &[String]) -> Container {
        let name = format!("{name}-{}", std::process::id());
        let _ = podman(&["rm", "--force", "--time", "0", &name]);
        let mut cmd: Vec<String> = ["run", "--detach", "--name", &name, "--runtime", "runc"]
            .into_iter()
            .chain(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .map(String::from)
            .collect();
        cmd.extend(flags.iter().cloned());
        cmd.push(image.tag.clone());
        cmd.extend(args.iter().cloned());
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        podman_ok(&cmd);
        Container { name }
    }

    pub fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// `podman stop` (SIGTERM, then SIGKILL after `timeout_s`); the exit code.
    pub fn stop(&self, timeout_s: u32) -> i64 {
        podman_ok(&["stop", "--time", &timeout_s.to_string(), &self.name]);
        podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]).parse().expect("an exit code")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[container {}] logs:\n{}", self.name, self.logs());
        }
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// The container of `deploy/deployment.yaml`: its `args` and the `podman run` flags that
/// reproduce its security context (user, read-only root, capabilities, no privilege escalation,
/// the Pod's sysctls).
pub struct DeploymentContainer {
    pub args: Vec<String>,
    pub flags: Vec<String>,
}

impl DeploymentContainer {
    pub fn load() -> DeploymentContainer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/deployment.yaml");
        let doc: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let pod = &doc["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().into_iter().flatten().map(|s| s.as_str().expect("a string").to_string()).collect()
        };
        let args = strings(&container["args"]);
        let sc = &container["securityContext"];
        let user = sc["runAsUser"].as_u64().expect("runAsUser");
        let group = sc["runAsGroup"].as_u64().expect("runAsGroup");
        let mut flags = vec![format!("--user={user}:{group}")];
        if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
            flags.push("--read-only".into());
        }
        if sc["allowPrivilegeEscalation"].as_bool() == Some(false) {
            flags.push("--security-opt=no-new-privileges".into());
        }
        flags.extend(strings(&sc["capabilities"]["drop"]).into_iter().map(|c| format!("--cap-drop={c}")));
        flags.extend(strings(&sc["capabilities"]["add"]).into_iter().map(|c| format!("--cap-add={c}")));
        for sysctl in pod["securityContext"]["sysctls"].as_array().into_iter().flatten() {
            let (name, value) = (sysctl["name"].as_str().unwrap(), sysctl["value"].as_str().unwrap());
            flags.push(format!("--sysctl={name}={value}"));
        }
        DeploymentContainer { args, flags }
    }

    /// The value after `flag` in the args.
    pub fn arg(&self, flag: &str) -> &str {
        let at = self.args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in the Deployment's args"));
        &self.args[at + 1]
    }

    /// The args with the value after `flag` replaced.
    pub fn args_with(&self, flag: &str, value: &str) -> Vec<String> {
        let mut args = self.args.clone();
        let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in the Deployment's args"));
        args[at + 1] = value.to_string();
        args
    }
}

/// A loopback port free for both TCP and UDP (bound and released).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
            return port;
        }
    }
}
