//! The files in `deploy/` pass the checkers an operator's pipeline would
//! run: hadolint on the container file, `systemd-analyze verify` (and its
//! security exposure) on the unit, kubernetes-validate on the manifests, and
//! the broker's own loaders on the config and policy the cluster mounts.
//! No image is built here (no container runtime on this machine).

use std::path::Path;
use std::process::Command;

use jit_e2e::{peer_program, workspace_root};

fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test installs it)", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_container_file_passes_hadolint() {
    let (ok, text) = run(
        &peer_program("hadolint"),
        &["deploy/container/Containerfile"],
    );
    assert!(ok, "{text}");
}

#[test]
fn the_systemd_unit_verifies_and_is_well_confined() {
    // verify wants the binary the unit starts to exist: point a copy at the
    // one this build made.
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/jit-broker.service"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("jit-broker.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/jit-broker",
            env!("CARGO_BIN_EXE_jit-broker-under-test"),
        ),
    )
    .unwrap();
    let analyze = Path::new("systemd-analyze");
    let copy = copy.to_str().unwrap();
    let (ok, text) = run(analyze, &["verify", copy]);
    assert!(ok, "{text}");
    let (ok, text) = run(
        analyze,
        &["security", "--offline=true", "--threshold=20", copy],
    );
    assert!(
        ok,
        "exposure above 2.0 (systemd's scale 0–10; --threshold counts tenths):\n{text}"
    );
}

#[test]
fn the_kubernetes_manifests_validate_and_their_config_loads() {
    let mut args = vec!["--strict", "-k", "1.31.0"];
    let manifests = [
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/secret.yaml",
        "deploy/kubernetes/poddisruptionbudget.yaml",
        "deploy/kubernetes/networkpolicy.yaml",
    ];
    args.extend(manifests);
    let (ok, text) = run(&peer_program("kubernetes-validate"), &args);
    assert!(ok, "{text}");
    for m in manifests {
        assert!(text.contains(&format!("{m} passed")), "{m}: {text}");
    }
    // The ConfigMap kustomize makes from these two files.
    let dir = workspace_root().join("deploy/kubernetes");
    let config = jit_server::config::Config::load(Some(&dir.join("jit-broker.toml"))).unwrap();
    assert_eq!(config.scim.replicas, 0, "replicas count each other");
    assert_eq!(config.listen.port(), 8080);
    jit_server::load_policy(&dir.join("policy.toml")).unwrap();
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for m in manifests {
        let name = Path::new(m).file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(name),
            "{name} is not in kustomization.yaml"
        );
    }
}
