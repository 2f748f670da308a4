/// The draft 2020-12 vocabularies and the keywords each defines.
///
/// A dialect's meta-schema lists, in `$vocabulary`, which vocabularies apply to
/// schemas written in it; keywords of a vocabulary that is not listed are not
/// evaluated (they become unknown keywords, handled by the unknown-keyword policy).
struct VocabularySet: OptionSet, Hashable, Sendable {
    let rawValue: UInt8

    static let core = VocabularySet(rawValue: 1 << 0)
    static let applicator = VocabularySet(rawValue: 1 << 1)
    static let unevaluated = VocabularySet(rawValue: 1 << 2)
    static let validation = VocabularySet(rawValue: 1 << 3)
    static let metaData = VocabularySet(rawValue: 1 << 4)
    static let formatAnnotation = VocabularySet(rawValue: 1 << 5)
    static let content = VocabularySet(rawValue: 1 << 6)

    static let all: VocabularySet = [.core, .applicator, .unevaluated, .validation, .metaData, .formatAnnotation, .content]

    static let byURI: [String: VocabularySet] = [
        "https://json-schema.org/draft/2020-12/vocab/core": .core,
        "https://json-schema.org/draft/2020-12/vocab/applicator": .applicator,
        "https://json-schema.org/draft/2020-12/vocab/unevaluated": .unevaluated,
        "https://json-schema.org/draft/2020-12/vocab/validation": .validation,
        "https://json-schema.org/draft/2020-12/vocab/meta-data": .metaData,
        "https://json-schema.org/draft/2020-12/vocab/format-annotation": .formatAnnotation,
        "https://json-schema.org/draft/2020-12/vocab/content": .content,
    ]
}

enum Keywords {
    /// The vocabulary of every keyword this validator knows.
    static let vocabulary: [String: VocabularySet] = {
        var table: [String: VocabularySet] = [:]
        for keyword in ["$id", "$schema", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary", "$comment", "$defs"] {
            table[keyword] = .core
        }
        for keyword in [
            "prefixItems", "items", "contains", "additionalProperties", "properties", "patternProperties",
            "dependentSchemas", "propertyNames", "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
        ] {
            table[keyword] = .applicator
        }
        for keyword in ["unevaluatedItems", "unevaluatedProperties"] { table[keyword] = .unevaluated }
        for keyword in [
            "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
            "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains", "minContains",
            "maxProperties", "minProperties", "required", "dependentRequired",
        ] {
            table[keyword] = .validation
        }
        for keyword in ["title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples"] {
            table[keyword] = .metaData
        }
        table["format"] = .formatAnnotation
        for keyword in ["contentEncoding", "contentMediaType", "contentSchema"] { table[keyword] = .content }
        return table
    }()

    /// Keywords that only annotate (they never make an instance invalid here), so
    /// they are accepted whatever the unknown-keyword policy and dialect.
    static func isAnnotationOnly(_ keyword: String) -> Bool {
        if keyword.hasPrefix("x-") { return true }
        switch keyword {
        case "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment",
            "format", "contentMediaType", "contentEncoding", "contentSchema":
            return true
        default:
            return false
        }
    }

    /// Keywords whose value is a schema, an array of schemas or an object of schemas:
    /// where `$id`, `$anchor` and `$dynamicAnchor` are searched for, and where the
    /// compiler descends.
    enum Shape { case schema, schemaArray, schemaMap }

    static let subschemaShape: [String: Shape] = [
        "additionalProperties": .schema, "unevaluatedProperties": .schema, "unevaluatedItems": .schema,
        "items": .schema, "contains": .schema, "propertyNames": .schema, "not": .schema, "if": .schema,
        "then": .schema, "else": .schema, "contentSchema": .schema,
        "prefixItems": .schemaArray, "allOf": .schemaArray, "anyOf": .schemaArray, "oneOf": .schemaArray,
        "properties": .schemaMap, "patternProperties": .schemaMap, "dependentSchemas": .schemaMap, "$defs": .schemaMap,
    ]
}
