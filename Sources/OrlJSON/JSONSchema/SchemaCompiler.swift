/// Turns schema documents into a `SchemaProgram`: resolves references, decodes and
/// checks every keyword value, and applies the unknown-keyword policy.
///
/// Subschemas are compiled on first use and memoised by position, so a subschema
/// reached both inline and through `$ref` is compiled once, and reference cycles
/// terminate (the cycle closes on the memoised index).
struct SchemaCompiler {
    private var index: SchemaIndex
    private let options: JSONSchema.Options
    private var schemas: [CompiledSchema] = []
    private var compiled: [SchemaPosition: Int] = [:]
    private var resources: [CompiledResource] = []
    private var resourceIDs: [String: Int] = [:]
    private var dialects: [String: VocabularySet] = [:]

    private init(index: SchemaIndex, options: JSONSchema.Options) {
        self.index = index
        self.options = options
    }

    static func compile(
        root: Node, baseURI: String, registry: SchemaRegistry, options: JSONSchema.Options
    ) throws(SchemaError) -> SchemaProgram {
        var index = SchemaIndex()
        index.add(root, uri: baseURI)
        for document in registry.documents { index.add(document.root, uri: document.uri) }
        // The embedded meta-schemas come last so a registered document may stand in for one.
        for meta in MetaSchemas.documents { index.add(meta.root, unlessDefined: meta.uri) }
        var compiler = SchemaCompiler(index: index, options: options)
        let rootID = try compiler.compile(SchemaPosition(document: 0, pointer: ""))
        try compiler.compileDynamicAnchors()
        return SchemaProgram(schemas: compiler.schemas, resources: compiler.resources, root: rootID)
    }

    /// `$dynamicRef` may land on the `$dynamicAnchor` of any resource in the dynamic
    /// scope, so every dynamic anchor of every resource that evaluation can enter is
    /// compiled. Compiling one may enter new resources, hence the growing loop.
    private mutating func compileDynamicAnchors() throws(SchemaError) {
        var next = 0
        while next < resources.count {
            for (name, position) in index.dynamicAnchors(of: resources[next].uri) {
                let id = try compile(position)
                resources[next].dynamicAnchors[name] = id
            }
            next += 1
        }
    }

    private mutating func resourceID(for uri: String) -> Int {
        if let id = resourceIDs[uri] { return id }
        let id = resources.count
        resources.append(CompiledResource(uri: uri, dynamicAnchors: [:]))
        resourceIDs[uri] = id
        return id
    }

    private mutating func compile(_ position: SchemaPosition) throws(SchemaError) -> Int {
        if let id = compiled[position] { return id }
        guard let node = index.node(at: position) else {
            preconditionFailure("compile() is only called with positions that exist")
        }
        let scope = index.scope(at: position, of: node)
        let id = schemas.count
        schemas.append(.placeholder)
        compiled[position] = id

        let relative = position.pointer.dropFirst(scope.resourcePointer.count)
        var schema = CompiledSchema(
            body: .always(true), resource: resourceID(for: scope.base.string),
            location: scope.base.string + "#" + relative, usesAnnotations: false)
        switch node.value {
        case .bool(let value):
            schema.body = .always(value)
        case .object(let members):
            var context = Context(position: position, scope: scope)
            let keywords = try compileKeywords(members, in: &context)
            schema.body = keywords.isEmpty ? .always(true) : .keywords(keywords)
            schema.usesAnnotations = keywords.contains {
                switch $0 {
                case .unevaluatedItems, .unevaluatedProperties: true
                default: false
                }
            }
        default:
            throw SchemaError(
                "a schema must be an object or a boolean, not \(node.typeName)", at: node.location,
                schemaPointer: position.pointer)
        }
        schemas[id] = schema
        return id
    }

    /// Where the keywords being compiled sit, for errors and for subschema positions.
    private struct Context {
        var position: SchemaPosition
        var scope: SchemaScope

        func pointer(_ keyword: String) -> String { position.pointer + "/" + keyword.jsonPointerEscaped }

        func child(_ keyword: String, _ token: String? = nil) -> SchemaPosition {
            var pointer = pointer(keyword)
            if let token { pointer += "/" + token.jsonPointerEscaped }
            return SchemaPosition(document: position.document, pointer: pointer)
        }

        func error(_ member: Node.Member, _ message: String) -> SchemaError {
            SchemaError(message, at: member.value.location, schemaPointer: pointer(member.key))
        }
    }

    private mutating func compileKeywords(
        _ members: [Node.Member], in context: inout Context
    ) throws(SchemaError) -> [Keyword] {
        let vocabularies = try vocabularies(of: context.scope.dialect, members: members, context: context)
        // `type` first: it is the cheapest check and the most telling message.
        var leading: [Keyword] = []
        var keywords: [Keyword] = []
        var trailing: [Keyword] = []  // unevaluated*, which need every other result
        var rules = PropertyRules(properties: [:], patterns: [], additional: nil)
        var hasPropertyRules = false
        var prefixItems: [Int] = []
        var items: Int?
        var contains: Int?
        var minContains: Int?
        var maxContains: Int?
        var conditional: (if: Int?, then: Int?, else: Int?) = (nil, nil, nil)

        for member in members {
            let keyword = member.key
            switch keyword {
            case "$id", "$schema", "$anchor", "$dynamicAnchor", "$vocabulary", "$comment":
                guard member.value.string != nil || keyword == "$vocabulary" else {
                    throw context.error(member, "\"\(keyword)\" must be a string")
                }
                continue
            case "$defs":
                // Compiled when referenced; only the shape is checked here.
                guard member.value.members != nil else { throw context.error(member, "\"$defs\" must be an object") }
                continue
            default:
                break
            }
            if Keywords.isAnnotationOnly(keyword) { continue }
            guard let vocabulary = Keywords.vocabulary[keyword], vocabularies.contains(vocabulary) else {
                if options.unknownKeywords == .ignore { continue }
                throw unknownKeyword(member, known: Keywords.vocabulary[keyword] != nil, context: context)
            }
            let value = member.value
            switch keyword {
            case "type":
                leading.append(.type(try types(member, context)))
            case "const":
                keywords.append(.constant(value))
            case "enum":
                guard let values = value.elements else { throw context.error(member, "\"enum\" must be an array") }
                keywords.append(.enumeration(Enumeration(values)))
            case "multipleOf":
                let divisor = try number(member, context)
                guard divisor.double > 0 else { throw context.error(member, "\"multipleOf\" must be greater than 0") }
                keywords.append(.multipleOf(divisor, exact: ExactDecimal(divisor.text)))
            case "minimum": keywords.append(.minimum(try number(member, context)))
            case "maximum": keywords.append(.maximum(try number(member, context)))
            case "exclusiveMinimum": keywords.append(.exclusiveMinimum(try number(member, context)))
            case "exclusiveMaximum": keywords.append(.exclusiveMaximum(try number(member, context)))
            case "minLength": keywords.append(.minLength(try count(member, context)))
            case "maxLength": keywords.append(.maxLength(try count(member, context)))
            case "minItems": keywords.append(.minItems(try count(member, context)))
            case "maxItems": keywords.append(.maxItems(try count(member, context)))
            case "minProperties": keywords.append(.minProperties(try count(member, context)))
            case "maxProperties": keywords.append(.maxProperties(try count(member, context)))
            case "minContains": minContains = try count(member, context)
            case "maxContains": maxContains = try count(member, context)
            case "pattern":
                keywords.append(.pattern(try pattern(value, member, context)))
            case "uniqueItems":
                guard let unique = value.bool else { throw context.error(member, "\"uniqueItems\" must be a boolean") }
                if unique { keywords.append(.uniqueItems) }
            case "required":
                keywords.append(.required(try strings(member, context)))
            case "dependentRequired":
                guard let entries = value.members else {
                    throw context.error(member, "\"dependentRequired\" must be an object")
                }
                var dependencies: [(property: String, required: [String])] = []
                for entry in entries {
                    let strings = try strings(Node.Member(key: keyword, keyLocation: entry.keyLocation, value: entry.value), context)
                    dependencies.append((entry.key, strings))
                }
                keywords.append(.dependentRequired(dependencies))
            case "properties":
                hasPropertyRules = true
                for entry in try schemaMap(member, context) {
                    rules.properties[entry.key] = try compile(context.child(keyword, entry.key))
                }
            case "patternProperties":
                hasPropertyRules = true
                for entry in try schemaMap(member, context) {
                    let compiledPattern = try pattern(
                        Node(.string(entry.key), at: entry.keyLocation), member, context)
                    rules.patterns.append((compiledPattern, try compile(context.child(keyword, entry.key))))
                }
            case "additionalProperties":
                hasPropertyRules = true
                rules.additional = try compile(context.child(keyword))
            case "dependentSchemas":
                var dependencies: [(property: String, schema: Int)] = []
                for entry in try schemaMap(member, context) {
                    dependencies.append((entry.key, try compile(context.child(keyword, entry.key))))
                }
                keywords.append(.dependentSchemas(dependencies))
            case "propertyNames": keywords.append(.propertyNames(try compile(context.child(keyword))))
            case "prefixItems": prefixItems = try schemaArray(member, context)
            case "items": items = try compile(context.child(keyword))
            case "contains": contains = try compile(context.child(keyword))
            case "allOf": keywords.append(.allOf(try schemaArray(member, context)))
            case "anyOf": keywords.append(.anyOf(try schemaArray(member, context)))
            case "oneOf": keywords.append(.oneOf(try schemaArray(member, context)))
            case "not": keywords.append(.not(try compile(context.child(keyword))))
            case "if": conditional.if = try compile(context.child(keyword))
            case "then": conditional.then = try compile(context.child(keyword))
            case "else": conditional.else = try compile(context.child(keyword))
            case "$ref":
                let (target, reference) = try resolve(member, context)
                keywords.append(.ref(try compile(target), reference: reference))
            case "$dynamicRef":
                let (target, reference) = try resolve(member, context)
                let anchor = dynamicAnchor(of: reference, at: target)
                keywords.append(.dynamicRef(try compile(target), anchor: anchor, reference: reference))
            case "unevaluatedItems": trailing.append(.unevaluatedItems(try compile(context.child(keyword))))
            case "unevaluatedProperties": trailing.append(.unevaluatedProperties(try compile(context.child(keyword))))
            default:
                preconditionFailure("keyword \(keyword) is in the vocabulary table but not compiled")
            }
        }

        if hasPropertyRules { keywords.append(.properties(rules)) }
        if !prefixItems.isEmpty || items != nil { keywords.append(.items(prefix: prefixItems, rest: items)) }
        // Without `contains`, `minContains`/`maxContains` have nothing to count.
        if let contains { keywords.append(.contains(contains, min: minContains ?? 1, max: maxContains)) }
        // Without `if`, `then` and `else` are ignored.
        if let condition = conditional.if {
            keywords.append(.conditional(if: condition, then: conditional.then, else: conditional.else))
        }
        return leading + keywords + trailing
    }

    // MARK: Dialects

    /// The vocabularies a dialect's meta-schema declares. The standard 2020-12 dialect
    /// (and a schema with no `$schema`) has all of them; a custom meta-schema may
    /// leave some out, and must not require one this validator does not know.
    private mutating func vocabularies(
        of dialect: String?, members: [Node.Member], context: Context
    ) throws(SchemaError) -> VocabularySet {
        guard let dialect, dialect != MetaSchemas.dialectURI else { return .all }
        if let known = dialects[dialect] { return known }
        let schemaMember = members.first { $0.key == "$schema" }
        func failure(_ message: String) -> SchemaError {
            schemaMember.map { context.error($0, message) }
                ?? SchemaError(message, at: .file("<schema>"), schemaPointer: context.position.pointer)
        }
        guard let position = index.resolve(dialect, against: URIReference(dialect)), let meta = index.node(at: position)
        else {
            throw failure(
                "unsupported dialect \"\(dialect)\": only JSON Schema draft 2020-12 and meta-schemas registered with the schema are known")
        }
        guard let declared = meta["$vocabulary"]?.members else {
            dialects[dialect] = .all
            return .all
        }
        var set: VocabularySet = .core
        for entry in declared {
            if let vocabulary = VocabularySet.byURI[entry.key] {
                set.insert(vocabulary)
            } else if entry.value.bool == true {
                throw failure("dialect \"\(dialect)\" requires vocabulary \"\(entry.key)\", which this validator does not implement")
            }
        }
        dialects[dialect] = set
        return set
    }

    // MARK: References

    private mutating func resolve(_ member: Node.Member, _ context: Context) throws(SchemaError) -> (SchemaPosition, String) {
        guard let reference = member.value.string else {
            throw context.error(member, "\"\(member.key)\" must be a string")
        }
        guard let target = index.resolve(reference, against: context.scope.base) else {
            let absolute = URIReference(reference).resolved(against: context.scope.base).string
            throw context.error(member, "cannot resolve \(member.key) \"\(reference)\" (\(absolute)): no such schema is known")
        }
        return (target, reference)
    }

    /// A `$dynamicRef` is dynamic only when its static target declares the same
    /// `$dynamicAnchor` as the reference's fragment (the "bookend" requirement).
    private func dynamicAnchor(of reference: String, at target: SchemaPosition) -> String? {
        guard let fragment = URIReference(reference).fragment?.percentDecoded, !fragment.isEmpty, !fragment.hasPrefix("/"),
            index.node(at: target)?["$dynamicAnchor"]?.string == fragment
        else { return nil }
        return fragment
    }

    // MARK: Keyword values

    private func unknownKeyword(_ member: Node.Member, known: Bool, context: Context) -> SchemaError {
        if known {
            return context.error(
                member,
                "keyword \"\(member.key)\" is not part of this schema's dialect (\(context.scope.dialect ?? "")), so it would be ignored")
        }
        var message = "unknown schema keyword \"\(member.key)\""
        message += Suggestion.hint(for: member.key, among: Keywords.vocabulary.keys)
        message += "; it would not be enforced: remove it, or prefix it with \"x-\" if it is an extension"
        return SchemaError(message, at: member.keyLocation, schemaPointer: context.pointer(member.key))
    }

    private func types(_ member: Node.Member, _ context: Context) throws(SchemaError) -> JSONTypes {
        let names: [Node]
        switch member.value.value {
        case .string: names = [member.value]
        case .array(let elements): names = elements
        default: throw context.error(member, "\"type\" must be a type name or an array of type names")
        }
        var types: JSONTypes = []
        for name in names {
            guard let string = name.string, let type = JSONTypes.names.first(where: { $0.0 == string })?.1 else {
                throw context.error(
                    member,
                    "unknown type \(name.string.map { "\"\($0)\"" } ?? name.typeName); expected one of: "
                        + JSONTypes.names.map(\.0).joined(separator: ", "))
            }
            types.insert(type)
        }
        return types
    }

    private func number(_ member: Node.Member, _ context: Context) throws(SchemaError) -> Number {
        guard let number = member.value.number, number.double.isFinite else {
            throw context.error(member, "\"\(member.key)\" must be a number")
        }
        return number
    }

    private func count(_ member: Node.Member, _ context: Context) throws(SchemaError) -> Int {
        guard let number = member.value.number, number.isWhole, number.double >= 0 else {
            throw context.error(member, "\"\(member.key)\" must be a non-negative integer")
        }
        return number.integer ?? Int.max
    }

    private func strings(_ member: Node.Member, _ context: Context) throws(SchemaError) -> [String] {
        guard let elements = member.value.elements else {
            throw context.error(member, "\"\(member.key)\" must be an array of strings")
        }
        var strings: [String] = []
        for element in elements {
            guard let string = element.string else {
                throw context.error(member, "\"\(member.key)\" must be an array of strings")
            }
            strings.append(string)
        }
        return strings
    }

    private func pattern(_ source: Node, _ member: Node.Member, _ context: Context) throws(SchemaError) -> Pattern {
        guard let text = source.string else { throw context.error(member, "\"\(member.key)\" must be a string") }
        do {
            return try Pattern(text)
        } catch {
            throw SchemaError(
                "invalid regular expression \"\(text)\" in \"\(member.key)\": \(error)", at: source.location,
                schemaPointer: context.pointer(member.key))
        }
    }

    private mutating func schemaArray(_ member: Node.Member, _ context: Context) throws(SchemaError) -> [Int] {
        guard let elements = member.value.elements, !elements.isEmpty else {
            throw context.error(member, "\"\(member.key)\" must be a non-empty array of schemas")
        }
        var ids: [Int] = []
        for index in elements.indices {
            ids.append(try compile(context.child(member.key, String(index))))
        }
        return ids
    }

    private func schemaMap(_ member: Node.Member, _ context: Context) throws(SchemaError) -> [Node.Member] {
        guard let entries = member.value.members else {
            throw context.error(member, "\"\(member.key)\" must be an object of schemas")
        }
        return entries
    }
}
