//! End-to-end: the real `kubectl` (v1.32) against a three-replica `berth server` cluster.
//!
//! One cluster runs the whole session a user would: apply a manifest (created, unchanged,
//! configured), server-side apply, every common `get` output, a watch that sees a change,
//! describe, label, annotate, scale, the three patch types, edit, delete, discovery and
//! explain; then the replica kubectl talks to is killed, and another replica carries on with
//! no data lost. A second cluster runs the commands built on client-go's typed clients, whose
//! request bodies are protobuf (`create configmap|secret generic|namespace|deployment|service|
//! job|serviceaccount`, the DeleteOptions of `drain`), and `run`, `expose`, `rollout`, cascading
//! `delete` and `cordon`. Each kubectl run gets a private HOME and discovery cache.

mod common;

use common::*;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

/// One object of the demo app: `kind` named `name` in namespace `demo`, labelled `app: web`,
/// followed by `body` (its top-level fields other than metadata, as YAML).
fn demo_object(api_version: &str, kind: &str, name: &str, body: &str) -> String {
    let metadata = format!("metadata:\n  name: {name}\n  namespace: demo\n  labels:\n    app: web\n");
    format!("apiVersion: {api_version}\nkind: {kind}\n{metadata}{body}")
}

/// The demo app the session applies: a namespace, configuration, and a web Deployment with
/// `replicas` pods behind a Service.
fn demo_manifest(replicas: u32) -> String {
    let deployment = format!(
        r#"spec:
  replicas: {replicas}
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
"#
    );
    let service = r#"spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
"#;
    [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n".to_string(),
        demo_object("v1", "ConfigMap", "web-config", "data:\n  greeting: hello\n"),
        demo_object("v1", "Secret", "web-secret", "data:\n  password: czNjcmV0\n"),
        demo_object("apps/v1", "Deployment", "web", &deployment),
        demo_object("v1", "Service", "web", service),
    ]
    .join("---\n")
}

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
        self.ok_with(args, None, &[])
    }

    /// Like [`ok`](Self::ok), feeding `stdin` and adding `envs`.
    fn ok_with(&self, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> String {
        let out = run_kubectl(&self.home, &self.kubeconfig, args, stdin, envs);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, asserts failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "kubectl {args:?} should have failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
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
    std::fs::write(&manifest, demo_manifest(2)).unwrap();
    let file = manifest.to_str().unwrap();

    // Client-side apply: created, unchanged, configured.
    let out = k.ok(&["apply", "-f", file]);
    for what in ["namespace/demo", "configmap/web-config", "secret/web-secret", "deployment.apps/web", "service/web"] {
        assert!(out.contains(&format!("{what} created")), "{out}");
    }
    let out = k.ok(&["apply", "-f", file]);
    assert_eq!(lines_with(&out, "unchanged"), 5, "{out}");
    std::fs::write(&manifest, demo_manifest(3)).unwrap();
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
    // No request timeout: the watch stays open until it is killed.
    let watch_args = [
        "get",
        "cm",
        "web-config",
        "-n",
        "demo",
        "-w",
        "--request-timeout=0",
        "-o",
        "custom-columns=NAME:.metadata.name,MOOD:.metadata.labels.mood",
    ];
    let mut watcher =
        kubectl_command(home.path(), &cluster.kubeconfig(0), &watch_args, &[]).stderr(Stdio::null()).spawn().unwrap();
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
        None,
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

/// A ReplicaSet of Deployment `web` (uid `owner`) at `revision`, as the deployment controller
/// would write it (Berth has no controllers yet, so the test plays that part).
fn replica_set(revision: u32, image: &str, owner: &str) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "ReplicaSet",
  "metadata": {{"name": "web-{revision}", "namespace": "typed",
    "labels": {{"app": "web", "pod-template-hash": "h{revision}"}},
    "annotations": {{"deployment.kubernetes.io/revision": "{revision}"}},
    "ownerReferences": [{{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "{owner}",
                          "controller": true, "blockOwnerDeletion": true}}]}},
  "spec": {{"replicas": 0, "selector": {{"matchLabels": {{"app": "web", "pod-template-hash": "h{revision}"}}}},
    "template": {{"metadata": {{"labels": {{"app": "web", "pod-template-hash": "h{revision}"}}}},
                 "spec": {{"containers": [{{"name": "nginx", "image": "{image}"}}]}}}}}}}}"#
    )
}

/// kubectl's typed-client commands (their bodies are protobuf), rollouts, cascading deletes,
/// cluster IP allocation, cordon and drain, against a replica other than the first.
#[test]
fn typed_commands_rollouts_cascades_and_drain() {
    if kubectl().is_none() {
        return;
    }
    let cluster = Cluster::start(3);
    for i in 0..3 {
        api_ready(&cluster, i, START_DEADLINE);
    }
    let home = tempfile::tempdir().unwrap();
    let k = Kubectl { home: home.path().to_path_buf(), kubeconfig: cluster.kubeconfig(1) };

    // Creates through client-go's clientset: protobuf request bodies.
    assert!(k.ok(&["create", "namespace", "typed"]).contains("namespace/typed created"));
    let commands: &[(&[&str], &str)] = &[
        (&["create", "configmap", "cfg", "--from-literal=greeting=hello"], "configmap/cfg created"),
        (&["create", "secret", "generic", "pw", "--from-literal=password=s3cret"], "secret/pw created"),
        (&["create", "serviceaccount", "robot"], "serviceaccount/robot created"),
        (
            &["create", "deployment", "web", "--image=nginx:1.27", "--replicas=0", "--port=80"],
            "deployment.apps/web created",
        ),
        (&["create", "service", "clusterip", "backend", "--tcp=80:8080"], "service/backend created"),
        (&["create", "job", "once", "--image=busybox", "--", "echo", "hi"], "job.batch/once created"),
        (&["run", "solo", "--image=nginx"], "pod/solo created"),
        (&["expose", "deployment", "web", "--port=80"], "service/web exposed"),
    ];
    for (args, said) in commands {
        // The namespace first: whatever follows `--` is the container's command.
        let out = k.ok(&[&["-n", "typed"][..], args].concat());
        assert!(out.contains(said), "{args:?}: {out}");
    }
    let get = |what: &[&str]| k.json(&[what, &["-n", "typed"][..]].concat());
    assert_eq!(get(&["get", "cm", "cfg"])["data"]["greeting"], "hello");
    assert_eq!(get(&["get", "secret", "pw"])["data"]["password"], "czNjcmV0");
    let web = get(&["get", "deploy", "web"]);
    assert_eq!(web["spec"]["replicas"], 0, "an explicit zero survives the protobuf decoding");
    assert_eq!(web["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
    let job = get(&["get", "job", "once"]);
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["echo", "hi"]));
    assert_eq!(get(&["get", "svc", "backend"])["spec"]["ports"][0]["targetPort"], 8080);

    // Every Service has its own cluster IP; asking for a taken one is refused.
    let ip_of = |name: &str| get(&["get", "svc", name])["spec"]["clusterIP"].as_str().unwrap().to_string();
    let (backend_ip, web_ip) = (ip_of("backend"), ip_of("web"));
    assert_ne!(backend_ip, web_ip);
    let taken = format!("--clusterip={backend_ip}");
    let err = k.fails(&["create", "service", "clusterip", "copycat", "--tcp=81", &taken, "-n", "typed"]);
    assert!(err.contains("provided IP is already allocated") && err.contains("Invalid"), "{err}");

    // Rollouts: the deployment controller's part (revision annotation, ReplicaSets) by hand.
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    k.ok(&["annotate", "deploy", "web", "-n", "typed", "deployment.kubernetes.io/revision=2"]);
    for (revision, image) in [(1, "nginx:1.26"), (2, "nginx:1.27")] {
        k.ok_with(&["apply", "-f", "-"], Some(&replica_set(revision, image, &uid)), &[]);
    }
    let history = k.ok(&["rollout", "history", "deploy/web", "-n", "typed"]);
    assert!(history.lines().any(|l| l.starts_with("1 ")) && history.lines().any(|l| l.starts_with("2 ")), "{history}");
    assert!(k.ok(&["rollout", "undo", "deploy/web", "-n", "typed"]).contains("rolled back"));
    assert_eq!(get(&["get", "deploy", "web"])["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26");
    assert!(k.ok(&["rollout", "restart", "deploy/web", "-n", "typed"]).contains("restarted"));
    let annotations = &get(&["get", "deploy", "web"])["spec"]["template"]["metadata"]["annotations"];
    assert!(annotations["kubectl.kubernetes.io/restartedAt"].is_string(), "{annotations}");
    k.ok(&["rollout", "pause", "deploy/web", "-n", "typed"]);
    assert_eq!(get(&["get", "deploy", "web"])["spec"]["paused"], true);
    k.ok(&["rollout", "resume", "deploy/web", "-n", "typed"]);
    let status = r#"{"status":{"observedGeneration":100,"replicas":0,"updatedReplicas":0,"availableReplicas":0}}"#;
    k.ok(&["patch", "deploy", "web", "-n", "typed", "--subresource=status", "--type=merge", "-p", status]);
    let out = k.ok(&["rollout", "status", "deploy/web", "-n", "typed", "--timeout=20s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    // Cascading deletes of a Deployment that owns ReplicaSets.
    let owners = |rs: &str| get(&["get", "rs", rs])["metadata"]["ownerReferences"].clone();
    k.ok(&["delete", "deploy", "web", "-n", "typed", "--cascade=orphan"]);
    assert!(owners("web-1").is_null() && owners("web-2").is_null(), "orphaned ReplicaSets lose their owner");
    k.ok(&["delete", "rs", "--all", "-n", "typed"]);
    for cascade in ["foreground", "background"] {
        k.ok(&["create", "deployment", "web", "--image=nginx:1.27", "-n", "typed"]);
        let uid = get(&["get", "deploy", "web"])["metadata"]["uid"].as_str().unwrap().to_string();
        k.ok_with(&["apply", "-f", "-"], Some(&replica_set(1, "nginx:1.27", &uid)), &[]);
        let out = k.ok(&["delete", "deploy", "web", "-n", "typed", &format!("--cascade={cascade}")]);
        assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
        let gone = k.fails(&["get", "rs", "web-1", "-n", "typed"]);
        assert!(gone.contains("NotFound"), "{cascade}: the ReplicaSet went with its owner: {gone}");
    }

    // Cordon and drain (the pod's DeleteOptions are protobuf too).
    k.ok_with(&["apply", "-f", "-"], Some(r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}"#), &[]);
    k.ok(&["run", "bound", "--image=nginx", "-n", "typed", r#"--overrides={"spec":{"nodeName":"n1"}}"#]);
    assert!(k.ok(&["cordon", "n1"]).contains("cordoned"));
    assert_eq!(k.json(&["get", "node", "n1"])["spec"]["unschedulable"], true);
    let out = k.ok(&["drain", "n1", "--force", "--grace-period=0", "--timeout=60s"]);
    assert!(out.contains("pod/bound deleted") && out.contains("node/n1 drained"), "{out}");
    assert!(k.fails(&["get", "pod", "bound", "-n", "typed"]).contains("NotFound"));
    assert!(k.ok(&["uncordon", "n1"]).contains("uncordoned"));
    assert!(k.ok(&["delete", "ns", "typed", "--wait"]).contains("namespace \"typed\" deleted"));
}
