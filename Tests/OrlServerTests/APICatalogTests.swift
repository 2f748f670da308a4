import OrlCore
import OrlServer
import Testing

/// docs/reference/openapi.json is generated from APICatalog; these tests keep the
/// catalog equal to the routes the servers really register.
@Suite struct APICatalogTests {
    @Test func controllerRoutesAreCatalogued() async throws {
        let harness = try AgentAPIServerTests.Harness()
        let server = APIServer(gateway: harness.gateway, agents: harness.api, port: 0, adminToken: "operator")
        #expect(
            server.registeredRoutes == APICatalog.keys(server: "controller"),
            "describe new routes in Sources/OrlServer/APICatalog.swift, then run scripts/gen-docs")
        await harness.stop()
    }

    @Test func webhookRoutesAreCatalogued() {
        let server = WebhookServer(host: "127.0.0.1", port: 0) { _ in WebhookAnswer(status: 202, message: "") }
        #expect(server.registeredRoutes == APICatalog.keys(server: "webhook"))
    }

    @Test func openAPIDocumentNamesEveryRoute() {
        let text = APICatalog.openAPI(version: "test").rendered()
        #expect(text.contains("\"openapi\": \"3.1.0\""))
        #expect(text.contains("\"/v1/tasks/{run}/{step}/{attempt}/complete\""))
        #expect(!text.contains("/:"))
    }
}
