import Foundation
import OrlCore
import OrlJSON
import OrlServer
import Testing

/// docs/reference/openapi.json is generated from APICatalog; these tests keep the
/// catalog equal to the routes the servers really register.
@Suite struct APICatalogTests {
    @Test func controllerRoutesAreCatalogued() async throws {
        let harness = try AgentAPIServerTests.Harness()
        let dashboard = Dashboard(
            store: harness.store, adminToken: "operator", budgets: { _ in [] }, clock: { Timestamp(milliseconds: 0) })
        let server = APIServer(gateway: harness.gateway, agents: harness.api, port: 0, adminToken: "operator", dashboard: dashboard)
        #expect(
            server.registeredRoutes == APICatalog.keys(server: "controller"),
            "describe new routes in Sources/OrlServer/APICatalog.swift, then run scripts/gen-docs")
        await harness.stop()
    }

    /// `--metrics-listen` serves the controller's `/metrics`, nothing else.
    @Test func metricsListenerRoutesAreCatalogued() async throws {
        let harness = try AgentAPIServerTests.Harness()
        let server = MetricsServer(gateway: harness.gateway, host: "127.0.0.1", port: 0)
        #expect(server.registeredRoutes == ["GET /metrics"])
        #expect(APICatalog.keys(server: "controller").isSuperset(of: server.registeredRoutes))
        await harness.stop()
    }

    @Test func webhookRoutesAreCatalogued() {
        let server = WebhookServer(host: "127.0.0.1", port: 0) { _ in WebhookAnswer(status: 202, message: "") }
        #expect(server.registeredRoutes == APICatalog.keys(server: "webhook"))
    }

    /// The Task schema the OpenAPI document publishes names every member a real task has.
    @Test func taskSchemaMatchesARealTask() async throws {
        let h = try AgentAPIServerTests.Harness()
        try await h.start()
        _ = try h.startRun("relay")
        let task = try await h.post("/v1/tasks/next?wait=0")
        #expect(task.status == 200)
        let text = APICatalog.openAPI(version: "test").rendered()
        let document = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let components = try #require(document["components"] as? [String: Any])
        let schema = try #require((components["schemas"] as? [String: Any])?["Task"] as? [String: Any])
        let properties = Set((schema["properties"] as? [String: Any] ?? [:]).keys)
        #expect(Set(task.json.keys).isSubset(of: properties), "\(Set(task.json.keys).subtracting(properties))")
        #expect(Set(schema["required"] as? [String] ?? []).isSubset(of: Set(task.json.keys)))
        await h.stop()
    }

    @Test func openAPIDocumentNamesEveryRoute() {
        let text = APICatalog.openAPI(version: "test").rendered()
        #expect(text.contains("\"openapi\": \"3.1.0\""))
        #expect(text.contains("\"/v1/tasks/{run}/{step}/{attempt}/complete\""))
        #expect(!text.contains("/:"))
    }
}
