//! End-to-end: the real `kubectl` (v1.32) against a three-replica `berth server` cluster.
//!
//! One cluster runs the whole session a user would: apply a manifest (created, unchanged,
//! configured), server-side apply, every common `get` output, a watch that sees a change,
//! describe, label, annotate, scale, the three patch types, edit, delete, discovery and
//! explain; then the replica kubectl talks to is killed, and another replica carries on with
//! no data lost. Each kubectl run gets a private HOME and discovery cache.

mod common;

use common::*;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: demo
  labels:
    app: web
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: demo
data:
  password: czNjcmV0
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
"#;

/// kubectl bound to one replica's kubeconfig and a private home.
struct Kubectl {
    home: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> std::process::Output {
        run_kubectl(&self.home, &self.kubeconfig, args, None, &[])
    }

    /// Runs kubectl, asserts success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, &[])
    }

    fn ok_with(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        let out = run_kubectl(&self.home, &self.kubeconfig, args, None, envs);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {args:?}: bad JSON {e}: {text}"))
    }
}

fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_kubectl_session_against_three_replicas() {
    if kubectl().is_none() {
        return;
    }
    let mut cluster = Cluster::start(3);
    for i in 0..3 {
        api_ready(&cluster, i, START_DEADLINE);
    }
    let home = tempfile::tempdir().unwrap();
    let k = Kubectl { home: home.path().to_path_buf(), kubeconfig: cluster.kubeconfig(0) };
    let manifest = home.path().join("app.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let file = manifest.to_str().unwrap();

    // Client-side apply: created, unchanged, configured.
    let out = k.ok(&["apply", "-f", file]);
    for what in ["namespace/demo", "configmap/web-config", "secret/web-secret", "deployment.apps/web", "service/web"] {
        assert!(out.contains(&format!("{what} created")), "{out}");
    }
    let out = k.ok(&["apply", "-f", file]);
    assert_eq!(lines_with(&out, "unchanged"), 5, "{out}");
    std::fs::write(&manifest, MANIFEST.replace("replicas: 2", "replicas: 3")).unwrap();
    let out = k.ok(&["apply", "-f", file]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert_eq!(lines_with(&out, "unchanged"), 4, "{out}");
    assert_eq!(k.json(&["get", "deploy", "web", "-n", "demo"])["spec"]["replicas"], 3);

    // Server-side apply takes over the fields (forced: client-side apply owned them).
    let out = k.ok(&["apply", "--server-side", "--force-conflicts", "-f", file]);
    assert_eq!(lines_with(&out, "serverside-applied"), 5, "{out}");
    let managed = k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "yaml", "--show-managed-fields"]);
    assert!(managed.contains("manager: kubectl") && managed.contains("operation: Apply"), "{managed}");

    // Outputs.
    let yaml = k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "yaml"]);
    assert!(yaml.contains("kind: Deployment") && yaml.contains("revisionHistoryLimit: 10"), "{yaml}");
    let wide = k.ok(&["get", "deploy", "-n", "demo", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        "{wide}"
    );
    assert!(wide.contains("nginx:1.27") && wide.contains("app=web"), "{wide}");
    assert_eq!(
        k.ok(&["get", "cm,svc", "-n", "demo", "-l", "app=web", "-o", "name"]).lines().collect::<Vec<_>>(),
        ["configmap/web-config", "service/web"]
    );
    let labels = k.ok(&["get", "svc", "web", "-n", "demo", "--show-labels"]);
    assert!(labels.lines().next().unwrap().ends_with("LABELS") && labels.contains("app=web"), "{labels}");
    let svc = k.ok(&["get", "svc", "-n", "demo"]);
    assert!(svc.contains("ClusterIP") && svc.contains("80/TCP"), "{svc}");
    let all_ns = k.ok(&["get", "ns", "-A"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease", "demo"] {
        assert!(all_ns.lines().any(|l| l.starts_with(&format!("{ns} "))), "{all_ns}");
    }
    let everywhere = k.ok(&["get", "deploy", "-A"]);
    assert!(everywhere.starts_with("NAMESPACE") && everywhere.contains("demo "), "{everywhere}");

    // A watch sees a change made meanwhile.
    let watch_out = Arc::new(Mutex::new(String::new()));
    let mut watcher = Command::new("kubectl")
        .env("HOME", home.path())
        .args([
            "--kubeconfig",
            cluster.kubeconfig(0).to_str().unwrap(),
            "--cache-dir",
            home.path().join("kube-cache").to_str().unwrap(),
        ])
        .args([
            "get",
            "cm",
            "web-config",
            "-n",
            "demo",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,MOOD:.metadata.labels.mood",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watcher.stdout.take().unwrap();
    let sink = watch_out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    poll_until(OP_DEADLINE, "the watch to list", || watch_out.lock().unwrap().contains("web-config").then_some(()));
    k.ok(&["label", "cm", "web-config", "-n", "demo", "mood=happy"]);
    poll_until(OP_DEADLINE, "the watch to show the change", || {
        watch_out.lock().unwrap().contains("happy").then_some(())
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    let _ = reader.join();

    // describe, label, annotate, scale, patch ×3, edit.
    let described = k.ok(&["describe", "deploy", "web", "-n", "demo"]);
    assert!(described.contains("Replicas:") && described.contains("RollingUpdate"), "{described}");
    assert!(k.ok(&["label", "deploy", "web", "-n", "demo", "tier=front"]).contains("labeled"));
    assert!(k.ok(&["annotate", "deploy", "web", "-n", "demo", "note=hi"]).contains("annotated"));
    assert!(k.ok(&["scale", "deploy", "web", "-n", "demo", "--replicas=5"]).contains("scaled"));
    let d = k.json(&["get", "deploy", "web", "-n", "demo"]);
    assert_eq!(
        (
            d["spec"]["replicas"].as_i64(),
            d["metadata"]["labels"]["tier"].as_str(),
            d["metadata"]["annotations"]["note"].as_str()
        ),
        (Some(5), Some("front"), Some("hi"))
    );
    k.ok(&["patch", "deploy", "web", "-n", "demo", "--type=merge", "-p", r#"{"spec":{"minReadySeconds":3}}"#]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "demo",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}"#,
    ]);
    let d = k.json(&["get", "deploy", "web", "-n", "demo"]);
    assert_eq!(d["spec"]["minReadySeconds"], 3);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.28");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80,
        "strategic merge kept the ports"
    );
    k.ok_with(
        &["edit", "cm", "web-config", "-n", "demo"],
        &[("KUBE_EDITOR", "sed -i s/greeting:\\ hello/greeting:\\ bonjour/")],
    );
    assert_eq!(k.json(&["get", "cm", "web-config", "-n", "demo"])["data"]["greeting"], "bonjour");

    // Discovery and schemas.
    let resources = k.ok(&["api-resources"]);
    assert!(
        resources
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["deployments", "deploy", "apps/v1", "true", "Deployment"]),
        "{resources}"
    );
    let explained = k.ok(&["explain", "deployment.spec"]);
    assert!(explained.contains("KIND:       Deployment") && explained.contains("replicas"), "{explained}");

    // Delete and wait.
    let out = k.ok(&["delete", "secret", "web-secret", "-n", "demo", "--wait"]);
    assert!(out.contains("secret \"web-secret\" deleted"), "{out}");
    let gone = k.run(&["get", "secret", "web-secret", "-n", "demo"]);
    assert!(
        !gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        describe(&gone)
    );

    // Kill the replica kubectl talks to: kubectl fails cleanly; another replica has everything.
    cluster.kill(0);
    let failed = k.run(&["get", "cm", "-n", "demo"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && stderr.contains("refused"), "{}", describe(&failed));
    let other = Kubectl { home: home.path().join("other"), kubeconfig: cluster.kubeconfig(1) };
    std::fs::create_dir_all(&other.home).unwrap();
    let cm = try_poll_until(OP_DEADLINE, || {
        let out = other.run(&["get", "cm", "web-config", "-n", "demo", "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    })
    .expect("another replica serves the ConfigMap");
    assert_eq!(cm["data"]["greeting"], "bonjour");
    assert_eq!(cm["metadata"]["labels"]["mood"], "happy");
    let out = other.ok(&["scale", "deploy", "web", "-n", "demo", "--replicas=1"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(other.json(&["get", "deploy", "web", "-n", "demo"])["spec"]["replicas"], 1);
    let out = other.ok(&["delete", "ns", "demo", "--wait"]);
    assert!(out.contains("namespace \"demo\" deleted"), "{out}");
    assert!(!other.run(&["get", "deploy", "web", "-n", "demo"]).status.success());
}
