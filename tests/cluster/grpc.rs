//! The standard gRPC services: health and reflection, as grpcurl uses them.

use crate::support::*;

#[test]
fn health_and_reflection_are_served() {
    let mut c = TestCluster::new(&[("solo", "member")]);
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    // SERVING once the node holds its lease (crate::cli tests the NOT_SERVING side).
    let solo = c.node("solo").address.clone();
    c.wait_for("solo SERVING", |_| {
        (crate::cli::grpc_health(&solo, "tandem.v1.Tandem")
            == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32))
        .then_some(())
    });
    let address = format!("http://{}", c.node("solo").address);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(address)
            .unwrap()
            .connect()
            .await
            .unwrap();

        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "tandem.v1.Tandem".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in ["tandem.v1.Tandem", "tandem.v1.Peer", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
        }
    });
}
