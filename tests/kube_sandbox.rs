//! The Kubernetes API stand-in (`sandbox/src/kube.rs`) over real TLS: create, read, replace
//! with the current resourceVersion, 409 on a stale one, merge patch with and without a
//! precondition, 404, 422 on an invalid name, 400 on bad base64, 401 without the token,
//! injected conflicts, Leases, and Status bodies shaped like the API server's. (The Secret
//! target that will use it is issue 6; this is its ground.)

use certrot_sandbox::ca::LocalCa;
use certrot_sandbox::kube::KubeServer;
use serde_json::{Value, json};

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        ct: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth("kube-token");
        if let Some(b) = body {
            r = r.header("content-type", ct).body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let code = resp.status().as_u16();
        let v = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
        (code, v)
    }
}

#[tokio::test]
async fn secrets_and_leases_with_api_semantics() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = LocalCa::new("kube CA").unwrap();
    let srv = KubeServer::start(&ca, "kube-token").await.unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.root_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let api = Api {
        client: client.clone(),
        base: srv.url.clone(),
    };
    use reqwest::Method as M;
    let secrets = "/api/v1/namespaces/apps/secrets";
    let json_ct = "application/json";
    let merge = "application/merge-patch+json";

    // No token: 401.
    let r = client
        .get(format!("{}{secrets}/orders", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // 404 with a Status body.
    let (code, v) = api
        .call(M::GET, &format!("{secrets}/orders"), "", None)
        .await;
    assert_eq!(
        (code, v["kind"].as_str(), v["reason"].as_str()),
        (404, Some("Status"), Some("NotFound"))
    );
    // Create; invalid name; bad base64; duplicate.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders"},
                        "type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}});
    let (code, created) = api
        .call(M::POST, secrets, json_ct, Some(secret.clone()))
        .await;
    assert_eq!(code, 201, "{created}");
    let rv1 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        created["metadata"]["uid"].is_string()
            && created["metadata"]["creationTimestamp"].is_string()
    );
    let mut bad = secret.clone();
    bad["metadata"]["name"] = json!("Orders_Cert");
    let (code, v) = api.call(M::POST, secrets, json_ct, Some(bad)).await;
    assert_eq!((code, v["reason"].as_str()), (422, Some("Invalid")), "{v}");
    let mut bad = secret.clone();
    bad["metadata"]["name"] = json!("other");
    bad["data"]["tls.key"] = json!("not base64!");
    let (code, v) = api.call(M::POST, secrets, json_ct, Some(bad)).await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = api
        .call(M::POST, secrets, json_ct, Some(secret.clone()))
        .await;
    assert_eq!((code, v["reason"].as_str()), (409, Some("AlreadyExists")));

    // Replace with the current resourceVersion: OK and the version moves on.
    let mut next = created.clone();
    next["data"]["tls.crt"] = json!("bmV3");
    let (code, replaced) = api
        .call(
            M::PUT,
            &format!("{secrets}/orders"),
            json_ct,
            Some(next.clone()),
        )
        .await;
    assert_eq!(code, 200, "{replaced}");
    let rv2 = replaced["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rv1, rv2);
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
    // The same write again is stale now: 409 Conflict, nothing changed.
    let (code, v) = api
        .call(M::PUT, &format!("{secrets}/orders"), json_ct, Some(next))
        .await;
    assert_eq!((code, v["reason"].as_str()), (409, Some("Conflict")), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    // A replace without resourceVersion is refused.
    let mut no_rv = replaced.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    assert_eq!(
        api.call(M::PUT, &format!("{secrets}/orders"), json_ct, Some(no_rv))
            .await
            .0,
        422
    );
    // Merge patch: annotations added and removed; with a stale precondition → 409.
    let (code, patched) = api
        .call(
            M::PATCH,
            &format!("{secrets}/orders"),
            merge,
            Some(json!({"metadata": {"annotations": {"certrot.io/state": "{}"}}})),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["metadata"]["annotations"]["certrot.io/state"], "{}");
    assert_eq!(patched["data"]["tls.crt"], "bmV3");
    let (code, _) = api
        .call(
            M::PATCH,
            &format!("{secrets}/orders"),
            merge,
            Some(json!({"metadata": {"resourceVersion": rv2, "annotations": {"x": "y"}}})),
        )
        .await;
    assert_eq!(code, 409);
    assert_eq!(
        api.call(
            M::PATCH,
            &format!("{secrets}/orders"),
            json_ct,
            Some(json!({}))
        )
        .await
        .0,
        415
    );
    // An injected concurrent writer: the next write conflicts and the version moves.
    srv.conflict_next_writes(1);
    let before = srv.object("secrets", "apps", "orders").unwrap();
    let (code, _) = api
        .call(
            M::PUT,
            &format!("{secrets}/orders"),
            json_ct,
            Some(before.clone()),
        )
        .await;
    assert_eq!(code, 409);
    let after = srv.object("secrets", "apps", "orders").unwrap();
    assert_ne!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert_eq!(before["data"], after["data"]);
    // Leases and deletion.
    let leases = "/apis/coordination.k8s.io/v1/namespaces/apps/leases";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "certrot-orders"},
                       "spec": {"holderIdentity": "job-1", "leaseDurationSeconds": 60}});
    let (code, l) = api.call(M::POST, leases, json_ct, Some(lease)).await;
    assert_eq!(code, 201, "{l}");
    let (code, list) = api.call(M::GET, leases, "", None).await;
    assert_eq!((code, list["items"].as_array().unwrap().len()), (200, 1));
    assert_eq!(
        api.call(M::DELETE, &format!("{leases}/certrot-orders"), "", None)
            .await
            .0,
        200
    );
    assert_eq!(
        api.call(M::DELETE, &format!("{leases}/certrot-orders"), "", None)
            .await
            .0,
        404
    );
    assert!(
        srv.calls()
            .iter()
            .any(|c| c.starts_with("PATCH /api/v1/namespaces/apps/secrets/orders"))
    );
}
