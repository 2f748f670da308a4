import OrlJSON
import Testing

/// The violations orl users see: messages, instance paths, source locations and
/// schema locations; and the compile-time unknown-keyword policy.
struct JSONSchemaValidationTests {
    static let agentSchema = """
        {
          "$id": "https://orl.dev/schemas/agent.json",
          "type": "object",
          "required": ["apiVersion", "kind", "metadata", "spec"],
          "additionalProperties": false,
          "properties": {
            "apiVersion": {"const": "orl.dev/v1"},
            "kind": {"const": "Agent"},
            "metadata": {
              "type": "object",
              "required": ["name"],
              "properties": {"name": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "maxLength": 63}}
            },
            "spec": {
              "type": "object",
              "required": ["model"],
              "additionalProperties": false,
              "properties": {
                "model": {"type": "string", "minLength": 1, "description": "model id"},
                "replicas": {"type": "integer", "minimum": 1, "default": 1},
                "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
                "temperature": {"type": "number", "multipleOf": 0.01, "maximum": 2},
                "tools": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 3}
              }
            }
          }
        }
        """

    func compile(_ text: String, options: JSONSchema.Options = JSONSchema.Options()) throws -> JSONSchema {
        try JSONSchema(JSONParser.parse(text, file: "schema.json"), options: options)
    }

    func violations(_ schema: JSONSchema, _ instance: String) throws -> [SchemaViolation] {
        schema.validate(try JSONParser.parse(instance, file: "agent.json"))
    }

    func compileError(_ text: String) -> SchemaError? {
        do {
            _ = try compile(text)
            return nil
        } catch let error as SchemaError {
            return error
        } catch {
            return nil
        }
    }

    @Test func validManifestHasNoViolations() throws {
        let schema = try compile(Self.agentSchema)
        let manifest = """
            {"apiVersion": "orl.dev/v1", "kind": "Agent", "metadata": {"name": "writer"},
             "spec": {"model": "m", "replicas": 2, "restartPolicy": "Never", "temperature": 0.07, "tools": ["a", "b"]}}
            """
        #expect(try violations(schema, manifest).isEmpty)
        #expect(schema.isValid(try JSONParser.parse(manifest, file: "agent.json")))
    }

    @Test func reportsEveryViolationWithPathLocationAndMessage() throws {
        let schema = try compile(Self.agentSchema)
        let manifest = """
            {"apiVersion": "orl.dev/v1", "kind": "Agent", "metadata": {"name": "Bad_Name"},
             "spec": {
               "modle": "m",
               "replicas": "three",
               "restartPolicy": "Allways",
               "tools": ["a", "a"]
             }}
            """
        let found = try violations(schema, manifest)
        let rendered = found.map { "\($0.location.line):\($0.location.column) \($0.path) [\($0.keyword)] \($0.message)" }
        #expect(
            rendered == [
                "1:68 metadata.name [pattern] must match pattern ^[a-z][a-z0-9-]*$, got \"Bad_Name\"",
                "2:10 spec [required] missing required field \"model\"",
                "3:4 spec.modle [additionalProperties] unknown field \"modle\" (did you mean \"model\"?)",
                "4:16 spec.replicas [type] expected integer, got string \"three\"",
                "5:21 spec.restartPolicy [enum] \"Allways\" is not one of: Always, OnFailure, Never (did you mean \"Always\"?)",
                "6:19 spec.tools[1] [uniqueItems] duplicate item: equal to item [0]",
            ])
        #expect(found[1].schemaLocation == "https://orl.dev/schemas/agent.json#/properties/spec/required")
        #expect(found[1].path.jsonPointer == "/spec")
        #expect(found[2].schemaLocation == "https://orl.dev/schemas/agent.json#/properties/spec/additionalProperties")
        #expect(found[5].path.jsonPointer == "/spec/tools/1")
    }

    @Test(arguments: [
        (#"{"model": "m", "replicas": 0}"#, "must be at least 1, got 0"),
        (#"{"model": "m", "temperature": 0.015}"#, "must be a multiple of 0.01, got 0.015"),
        (#"{"model": "m", "temperature": 2.5}"#, "must be at most 2, got 2.5"),
        (#"{"model": ""}"#, "must be at least 1 character long, got \"\""),
        (#"{"model": "m", "tools": ["a", "b", "c", "d"]}"#, "must have at most 3 items (it has 4)"),
        (#"{"model": "m", "tools": ["a", 1]}"#, "expected string, got integer 1"),
    ])
    func phrasesBoundsForPeople(spec: String, message: String) throws {
        let schema = try compile(Self.agentSchema)
        let manifest = #"{"apiVersion": "orl.dev/v1", "kind": "Agent", "metadata": {"name": "a"}, "spec": "#
        let found = try violations(schema, manifest + spec + "}")
        #expect(found.map(\.message) == [message])
    }

    @Test func multipleOfIsExactForDecimals() throws {
        let schema = try compile(#"{"multipleOf": 0.1}"#)
        for valid in ["0.3", "1.1", "100", "-2.2", "1e-1"] {
            #expect(schema.isValid(try JSONParser.parse(valid, file: "x")), "\(valid)")
        }
        #expect(!schema.isValid(try JSONParser.parse("0.31", file: "x")))
    }

    @Test func lengthsCountCodePoints() throws {
        let schema = try compile(#"{"maxLength": 2, "minLength": 2}"#)
        #expect(schema.isValid(Node(.string("é😀"), at: .file("x"))))
        #expect(!schema.isValid(Node(.string("abc"), at: .file("x"))))
    }

    static let steps = """
        {"oneOf": [
          {"type": "object", "required": ["kind", "command"],
           "properties": {"kind": {"const": "Shell"}, "command": {"type": "string"}}},
          {"type": "object", "required": ["kind", "agent"],
           "properties": {"kind": {"const": "Agent"}, "agent": {"type": "string"}}}
        ]}
        """

    @Test func alternativesReportTheBranchWhoseDiscriminatorMatches() throws {
        let found = try violations(compile(Self.steps), #"{"kind": "Agent", "command": 3}"#)
        #expect(found.map(\.message) == ["missing required field \"agent\""])
        #expect(found.first?.location.column == 1)
    }

    @Test func alternativesMergeDiscriminatorValues() throws {
        let found = try violations(compile(Self.steps), #"{"kind": "Agnet", "agent": "x"}"#)
        #expect(found.map(\.message) == ["\"Agnet\" is not one of: Shell, Agent (did you mean \"Agent\"?)"])
        #expect(found.first?.path.description == "kind")
        #expect(found.first?.location.column == 10)
    }

    @Test func alternativesMergeTypes() throws {
        let schema = try compile(#"{"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]}"#)
        #expect(try violations(schema, "3").map(\.message) == ["expected null, string or object, got integer 3"])
    }

    @Test func oneOfReportsAmbiguity() throws {
        let schema = try compile(#"{"oneOf": [{"type": "integer"}, {"minimum": 0}]}"#)
        #expect(
            try violations(schema, "3").map(\.message) == [
                "must match exactly one of the 2 alternatives, but matches 2 (#1, #2)"
            ])
    }

    @Test func unevaluatedPropertiesSuggestsFieldsOfComposedSchemas() throws {
        let schema = try compile(
            """
            {"$defs": {"base": {"properties": {"name": {"type": "string"}}}},
             "allOf": [{"$ref": "#/$defs/base"}],
             "properties": {"labels": {"type": "object"}},
             "unevaluatedProperties": false}
            """)
        let found = try violations(schema, #"{"name": 1, "lables": {}}"#)
        #expect(
            found.map(\.message) == [
                "expected string, got integer 1", "unknown field \"lables\" (did you mean \"labels\"?)",
            ])
        #expect(found[1].keyword == "unevaluatedProperties")
    }

    @Test func propertyNamesReportTheName() throws {
        let schema = try compile(#"{"propertyNames": {"pattern": "^[a-z]+$"}}"#)
        let found = try violations(schema, #"{"ok": 1, "Bad": 2}"#)
        #expect(found.map(\.message) == [#"invalid field name "Bad": must match pattern ^[a-z]+$, got "Bad""#])
        #expect(found.first?.location.column == 11)
    }

    @Test func detectsReferenceLoops() throws {
        let schema = try compile(##"{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}"##)
        let found = try violations(schema, "1")
        #expect(found.count == 1)
        #expect(found.first?.message.contains("infinite recursion") == true)
    }

    // MARK: Compiling

    @Test func rejectsUnknownKeywordsByDefault() {
        let error = compileError(#"{"properties": {"a": {"type": "string", "maxLenght": 3}}}"#)
        #expect(error?.schemaPointer == "/properties/a/maxLenght")
        #expect(error?.message.hasPrefix("unknown schema keyword \"maxLenght\" (did you mean \"maxLength\"?)") == true)
        #expect(error?.location == SourceLocation(file: "schema.json", line: 1, column: 41))
        #expect(compileError(#"{"definitions": {}}"#)?.schemaPointer == "/definitions")
    }

    @Test func ignoresUnknownKeywordsWhenAsked() throws {
        let schema = try compile(#"{"maxLenght": 3, "type": "string"}"#, options: JSONSchema.Options(unknownKeywords: .ignore))
        #expect(schema.isValid(Node(.string("long string"), at: .file("x"))))
    }

    @Test func alwaysAcceptsAnnotationKeywords() throws {
        _ = try compile(
            """
            {"title": "t", "description": "d", "default": 1, "examples": [1], "deprecated": false,
             "readOnly": true, "writeOnly": false, "$comment": "c", "format": "uri",
             "contentMediaType": "application/json", "contentEncoding": "base64", "contentSchema": {},
             "x-orl-display": {"order": 1}, "$schema": "https://json-schema.org/draft/2020-12/schema"}
            """)
    }

    @Test func reportsBadKeywordValues() {
        #expect(compileError(#"{"minLength": -1}"#)?.message == "\"minLength\" must be a non-negative integer")
        #expect(compileError(#"{"type": "text"}"#)?.message.hasPrefix("unknown type \"text\"") == true)
        #expect(compileError(#"{"pattern": "("}"#)?.message.hasPrefix("invalid regular expression \"(\"") == true)
        #expect(compileError(##"{"$ref": "#/$defs/missing"}"##)?.message.hasPrefix("cannot resolve $ref \"#/$defs/missing\"") == true)
        #expect(compileError(#"{"$schema": "http://json-schema.org/draft-07/schema#"}"#)?.message.hasPrefix("unsupported dialect") == true)
    }

    @Test func resolvesRegisteredDocumentsAndMetaSchemas() throws {
        var registry = SchemaRegistry()
        registry.register(
            try JSONParser.parse(#"{"$defs": {"name": {"type": "string"}}}"#, file: "common.json"),
            uri: "https://orl.dev/schemas/common.json")
        let schema = try JSONSchema(
            JSONParser.parse(
                #"{"$id": "https://orl.dev/schemas/x.json", "properties": {"n": {"$ref": "common.json#/$defs/name"}}}"#, file: "x.json"),
            registry: registry)
        #expect(try violations(schema, #"{"n": 1}"#).map(\.path.description) == ["n"])

        let meta = try compile(#"{"$ref": "https://json-schema.org/draft/2020-12/schema"}"#)
        #expect(meta.isValid(try JSONParser.parse(Self.agentSchema, file: "s")))
        #expect(try violations(meta, #"{"minLength": -1}"#).map(\.message) == ["must be at least 0, got -1"])
    }
}
