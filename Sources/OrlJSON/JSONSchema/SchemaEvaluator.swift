/// Evaluates a compiled schema against an instance.
///
/// It runs in one of two modes. The quick mode (`reporting == false`) only answers
/// valid/invalid: it stops at the first failure and builds no paths or strings. The
/// reporting mode runs only on invalid instances; it evaluates every keyword, tracks
/// the instance path, and turns failures into violations. Subschemas whose failure is
/// not itself an error (`not`, `if`, `contains`, alternatives being compared) are
/// always evaluated quickly.
struct SchemaEvaluator {
    private let schemas: [CompiledSchema]
    private let resources: [CompiledResource]
    private let root: Int
    private var reporting: Bool
    private var findings: [Finding] = []
    /// The instance path, maintained only while reporting.
    private var path: [ValuePath.Component] = []
    /// How deep in the instance evaluation is (the length of `path`, kept in both modes).
    private var depth = 0
    /// The schema resources evaluation has entered, outermost first: `$dynamicRef`'s
    /// search order.
    private var dynamicScope: [Int] = []
    /// The references being followed, with the instance depth at which each was taken.
    /// Reaching the same target again without descending into the instance would
    /// never end, so it is reported instead of followed.
    private var references: [(target: Int, depth: Int)] = []

    /// A violation with what the alternative-selection logic needs to know about it.
    private struct Finding {
        enum Detail {
            case other
            /// The value is not of the allowed types.
            case type(JSONTypes)
            /// The value (`got`) is not among the allowed values (`const`/`enum`).
            case values([Node], got: Node)
        }

        var violation: SchemaViolation
        var detail: Detail
    }

    init(program: SchemaProgram, reporting: Bool) {
        schemas = program.schemas
        resources = program.resources
        root = program.root
        self.reporting = reporting
    }

    mutating func validateRoot(_ instance: Node) -> Bool {
        var none: Annotations? = nil
        let valid = evaluate(root, instance, &none)
        if !valid && reporting && findings.isEmpty {
            // Every failing keyword reports; this only guards the contract that an
            // invalid instance never yields an empty list.
            report(root, nil, instance, "does not match the schema")
        }
        return valid
    }

    /// The violations in document order, without repetitions (one subschema reached
    /// twice reports the same problem twice).
    func reportedViolations() -> [SchemaViolation] {
        var seen = Set<SchemaViolation>()
        let unique = findings.map(\.violation).filter { seen.insert($0).inserted }
        return unique.enumerated().sorted { a, b in
            a.element.location != b.element.location ? a.element.location < b.element.location : a.offset < b.offset
        }.map(\.element)
    }

    // MARK: Schemas

    /// Evaluates subschema `id` against `instance`. When `annotations` is non-nil the
    /// caller needs to know what was evaluated (for `unevaluated*`); they are added to
    /// it if the subschema succeeds (or, while reporting, even if it fails, so that
    /// one mistake is not reported a second time as an unevaluated field).
    private mutating func evaluate(_ id: Int, _ instance: Node, _ annotations: inout Annotations?) -> Bool {
        let keywords: [Keyword]
        switch schemas[id].body {
        case .always(true):
            return true
        case .always(false):
            report(id, nil, instance, "no value is allowed here")
            return false
        case .keywords(let list):
            keywords = list
        }
        let resource = schemas[id].resource
        let entersResource = dynamicScope.last != resource
        if entersResource { dynamicScope.append(resource) }
        defer { if entersResource { dynamicScope.removeLast() } }

        var local: Annotations? = annotations != nil || schemas[id].usesAnnotations ? Annotations() : nil
        var valid = true
        // Through the buffer, so that each keyword is borrowed rather than copied (a
        // copy retains every operand it holds, at every node of every document).
        keywords.withUnsafeBufferPointer { list in
            for index in list.indices where !apply(list[index], of: id, to: instance, &local) {
                valid = false
                if !reporting { return }
            }
        }
        if !valid && !reporting { return false }
        if let local, annotations != nil, valid || reporting {
            annotations!.formUnion(local)
        }
        return valid
    }

    private mutating func descend(_ id: Int, into child: Node, key: String) -> Bool {
        if reporting { path.append(.key(key)) }
        depth += 1
        var none: Annotations? = nil
        let valid = evaluate(id, child, &none)
        depth -= 1
        if reporting { path.removeLast() }
        return valid
    }

    private mutating func descend(_ id: Int, into child: Node, index: Int) -> Bool {
        if reporting { path.append(.index(index)) }
        depth += 1
        var none: Annotations? = nil
        let valid = evaluate(id, child, &none)
        depth -= 1
        if reporting { path.removeLast() }
        return valid
    }

    /// Evaluates without reporting, for subschemas whose failure is not an error.
    private mutating func test(_ id: Int, _ instance: Node, _ annotations: inout Annotations?) -> Bool {
        let wasReporting = reporting
        reporting = false
        defer { reporting = wasReporting }
        return evaluate(id, instance, &annotations)
    }

    private func isFalse(_ id: Int) -> Bool {
        if case .always(false) = schemas[id].body { return true }
        return false
    }

    // MARK: Keywords

    private mutating func apply(
        _ keyword: Keyword, of schema: Int, to instance: Node, _ local: inout Annotations?
    ) -> Bool {
        switch keyword {
        case .type(let types):
            if types.admits(instance) { return true }
            report(
                schema, "type", instance, "expected \(types.description), got \(ViolationMessages.describe(instance))",
                detail: .type(types))
            return false

        case .constant(let constant):
            if instance == constant { return true }
            report(
                schema, "const", instance, ViolationMessages.mustEqual(instance, constant),
                detail: .values([constant], got: instance))
            return false

        case .enumeration(let enumeration):
            if enumeration.contains(instance) { return true }
            report(
                schema, "enum", instance, ViolationMessages.notOneOf(instance, enumeration.values),
                detail: .values(enumeration.values, got: instance))
            return false

        case .multipleOf(let divisor, let exact):
            guard case .number(let number) = instance.value, !Self.isMultiple(number, of: divisor, exact: exact) else {
                return true
            }
            report(schema, "multipleOf", instance, "must be a multiple of \(divisor.text), got \(number.text)")
            return false

        case .minimum(let limit):
            guard case .number(let number) = instance.value, Number.compare(number, limit) < 0 else { return true }
            report(schema, "minimum", instance, "must be at least \(limit.text), got \(number.text)")
            return false

        case .exclusiveMinimum(let limit):
            guard case .number(let number) = instance.value, Number.compare(number, limit) <= 0 else { return true }
            report(schema, "exclusiveMinimum", instance, "must be greater than \(limit.text), got \(number.text)")
            return false

        case .maximum(let limit):
            guard case .number(let number) = instance.value, Number.compare(number, limit) > 0 else { return true }
            report(schema, "maximum", instance, "must be at most \(limit.text), got \(number.text)")
            return false

        case .exclusiveMaximum(let limit):
            guard case .number(let number) = instance.value, Number.compare(number, limit) >= 0 else { return true }
            report(schema, "exclusiveMaximum", instance, "must be less than \(limit.text), got \(number.text)")
            return false

        case .minLength(let minimum):
            // Lengths count code points; UTF-8 length bounds it from above for free.
            guard case .string(let string) = instance.value, string.utf8.count < minimum || string.unicodeScalars.count < minimum
            else { return true }
            report(
                schema, "minLength", instance,
                "must be at least \(ViolationMessages.plural(minimum, "character")) long, got \(ViolationMessages.quoted(string))")
            return false

        case .maxLength(let maximum):
            guard case .string(let string) = instance.value, string.utf8.count > maximum,
                string.unicodeScalars.count > maximum
            else { return true }
            report(
                schema, "maxLength", instance,
                "must be at most \(ViolationMessages.plural(maximum, "character")) long (it has \(string.unicodeScalars.count))")
            return false

        case .pattern(let pattern):
            guard case .string(let string) = instance.value, !pattern.matches(string) else { return true }
            report(
                schema, "pattern", instance, "must match pattern \(pattern.source), got \(ViolationMessages.quoted(string))")
            return false

        case .minItems(let minimum):
            guard case .array(let elements) = instance.value, elements.count < minimum else { return true }
            report(
                schema, "minItems", instance,
                "must have at least \(ViolationMessages.plural(minimum, "item")) (it has \(elements.count))")
            return false

        case .maxItems(let maximum):
            guard case .array(let elements) = instance.value, elements.count > maximum else { return true }
            report(
                schema, "maxItems", instance,
                "must have at most \(ViolationMessages.plural(maximum, "item")) (it has \(elements.count))")
            return false

        case .uniqueItems:
            guard case .array(let elements) = instance.value else { return true }
            return checkUnique(elements, schema)

        case .minProperties(let minimum):
            guard case .object(let members) = instance.value, members.count < minimum else { return true }
            report(
                schema, "minProperties", instance,
                "must have at least \(ViolationMessages.plural(minimum, "field")) (it has \(members.count))")
            return false

        case .maxProperties(let maximum):
            guard case .object(let members) = instance.value, members.count > maximum else { return true }
            report(
                schema, "maxProperties", instance,
                "must have at most \(ViolationMessages.plural(maximum, "field")) (it has \(members.count))")
            return false

        case .required(let names):
            guard case .object(let members) = instance.value else { return true }
            var valid = true
            for name in names where !members.contains(where: { $0.key.hasSameCodePoints(as: name) }) {
                valid = false
                guard reporting else { return false }
                report(schema, "required", instance, "missing required field \(ViolationMessages.quoted(name))")
            }
            return valid

        case .dependentRequired(let dependencies):
            guard case .object(let members) = instance.value else { return true }
            var valid = true
            for dependency in dependencies where members.contains(where: { $0.key.hasSameCodePoints(as: dependency.property) }) {
                for name in dependency.required where !members.contains(where: { $0.key.hasSameCodePoints(as: name) }) {
                    valid = false
                    guard reporting else { return false }
                    report(
                        schema, "dependentRequired", instance,
                        "missing field \(ViolationMessages.quoted(name)), required when \(ViolationMessages.quoted(dependency.property)) is present"
                    )
                }
            }
            return valid

        case .items(let prefix, let rest):
            guard case .array(let elements) = instance.value else { return true }
            return applyItems(elements, prefix: prefix, rest: rest, schema, &local)

        case .contains(let subschema, let minimum, let maximum):
            guard case .array(let elements) = instance.value else { return true }
            return applyContains(elements, subschema, minimum, maximum, schema, instance, &local)

        case .properties(let rules):
            guard case .object(let members) = instance.value else { return true }
            return applyProperties(members, rules, schema, &local)

        case .dependentSchemas(let dependencies):
            guard case .object(let members) = instance.value else { return true }
            var valid = true
            for dependency in dependencies where members.contains(where: { $0.key.hasSameCodePoints(as: dependency.property) }) {
                if !evaluate(dependency.schema, instance, &local) {
                    valid = false
                    if !reporting { return false }
                }
            }
            return valid

        case .propertyNames(let subschema):
            guard case .object(let members) = instance.value else { return true }
            return applyPropertyNames(members, subschema)

        case .allOf(let subschemas):
            var valid = true
            for subschema in subschemas where !evaluate(subschema, instance, &local) {
                valid = false
                if !reporting { return false }
            }
            return valid

        case .anyOf(let subschemas):
            var matched = false
            for subschema in subschemas where test(subschema, instance, &local) {
                matched = true
                // Every matching alternative contributes annotations, so only stop
                // early when nobody needs them.
                if local == nil { break }
            }
            if !matched { reportAlternatives(subschemas, "anyOf", schema, instance, &local) }
            return matched

        case .oneOf(let subschemas):
            var matches: [Int] = []
            var matchedAnnotations: Annotations? = local == nil ? nil : Annotations()
            for (index, subschema) in subschemas.enumerated() {
                var annotations: Annotations? = local == nil ? nil : Annotations()
                if test(subschema, instance, &annotations) {
                    matches.append(index)
                    matchedAnnotations = annotations
                    if matches.count > 1 && !reporting { return false }
                }
            }
            if matches.count == 1 {
                if let matchedAnnotations { local?.formUnion(matchedAnnotations) }
                return true
            }
            if matches.isEmpty {
                reportAlternatives(subschemas, "oneOf", schema, instance, &local)
            } else {
                let listed = matches.map { "#\($0 + 1)" }
                report(
                    schema, "oneOf", instance,
                    "must match exactly one of the \(subschemas.count) alternatives, but matches \(matches.count) (\(listed.joined(separator: ", ")))"
                )
            }
            return false

        case .not(let subschema):
            var none: Annotations? = nil
            if !test(subschema, instance, &none) { return true }
            report(schema, "not", instance, "must not match the schema under \"not\"")
            return false

        case .conditional(let condition, let then, let otherwise):
            var conditionAnnotations: Annotations? = local == nil ? nil : Annotations()
            if test(condition, instance, &conditionAnnotations) {
                if let conditionAnnotations { local?.formUnion(conditionAnnotations) }
                return then.map { evaluate($0, instance, &local) } ?? true
            }
            return otherwise.map { evaluate($0, instance, &local) } ?? true

        case .ref(let target, let reference):
            return follow(target, "$ref", reference, schema, instance, &local)

        case .dynamicRef(var target, let anchor, let reference):
            if let anchor {
                // The outermost resource in the dynamic scope that declares the
                // anchor wins; the static target itself declares it, so one is found.
                for resource in dynamicScope {
                    if let found = resources[resource].dynamicAnchors[anchor] {
                        target = found
                        break
                    }
                }
            }
            return follow(target, "$dynamicRef", reference, schema, instance, &local)

        case .unevaluatedProperties(let subschema):
            guard case .object(let members) = instance.value else { return true }
            return applyUnevaluatedProperties(members, subschema, schema, &local)

        case .unevaluatedItems(let subschema):
            guard case .array(let elements) = instance.value else { return true }
            var valid = true
            for (index, element) in elements.enumerated() where !(local?.items.contains(index) ?? false) {
                if isFalse(subschema) {
                    valid = false
                    guard reporting else { return false }
                    report(
                        schema, "unevaluatedItems", element,
                        "unexpected item: the schema allows only \(ViolationMessages.plural(index, "item")) here",
                        appending: .index(index))
                } else if !descend(subschema, into: element, index: index) {
                    valid = false
                    if !reporting { return false }
                }
            }
            local?.items.all = true
            return valid
        }
    }

    private static func isMultiple(_ number: Number, of divisor: Number, exact: ExactDecimal?) -> Bool {
        if let value = number.integer, let step = divisor.integer { return value % step == 0 }
        if let exact, let value = ExactDecimal(number.text), let answer = value.isMultiple(of: exact) {
            return answer
        }
        // Too many digits for exact arithmetic: a quotient that overflows cannot be
        // checked and is treated as not a multiple.
        let quotient = number.double / divisor.double
        return quotient.isFinite && quotient == quotient.rounded()
    }

    private mutating func checkUnique(_ elements: [Node], _ schema: Int) -> Bool {
        var valid = true
        for later in elements.indices {
            guard let earlier = elements[..<later].firstIndex(where: { $0 == elements[later] }) else { continue }
            valid = false
            guard reporting else { return false }
            report(
                schema, "uniqueItems", elements[later], "duplicate item: equal to item [\(earlier)]",
                appending: .index(later))
        }
        return valid
    }

    private mutating func applyItems(
        _ elements: [Node], prefix: [Int], rest: Int?, _ schema: Int, _ local: inout Annotations?
    ) -> Bool {
        var valid = true
        for index in 0..<min(prefix.count, elements.count) {
            local?.items.insert(index)
            if !descend(prefix[index], into: elements[index], index: index) {
                valid = false
                if !reporting { return false }
            }
        }
        guard let rest else { return valid }
        local?.items.all = true
        guard elements.count > prefix.count else { return valid }
        if isFalse(rest) {
            guard reporting else { return false }
            for index in prefix.count..<elements.count {
                report(
                    schema, "items", elements[index],
                    "unexpected item: at most \(ViolationMessages.plural(prefix.count, "item")) allowed",
                    appending: .index(index))
            }
            return false
        }
        for index in prefix.count..<elements.count where !descend(rest, into: elements[index], index: index) {
            valid = false
            if !reporting { return false }
        }
        return valid
    }

    private mutating func applyContains(
        _ elements: [Node], _ subschema: Int, _ minimum: Int, _ maximum: Int?, _ schema: Int, _ instance: Node,
        _ local: inout Annotations?
    ) -> Bool {
        var count = 0
        for (index, element) in elements.enumerated() {
            var none: Annotations? = nil
            guard test(subschema, element, &none) else { continue }
            count += 1
            local?.items.insert(index)
            // Once enough match and there is no upper bound, the rest cannot change the answer.
            if count >= minimum && maximum == nil && local == nil { return true }
        }
        if count < minimum {
            report(
                schema, minimum == 1 ? "contains" : "minContains", instance,
                count == 0 && minimum == 1
                    ? "must contain at least one item matching the \"contains\" schema"
                    : "must contain at least \(ViolationMessages.plural(minimum, "item")) matching the \"contains\" schema (found \(count))"
            )
            return false
        }
        if let maximum, count > maximum {
            report(
                schema, "maxContains", instance,
                "must contain at most \(ViolationMessages.plural(maximum, "item")) matching the \"contains\" schema (found \(count))")
            return false
        }
        return true
    }

    private mutating func applyProperties(
        _ members: [Node.Member], _ rules: PropertyRules, _ schema: Int, _ local: inout Annotations?
    ) -> Bool {
        var valid = true
        // The keys present, once per object and only when an unknown one is reported:
        // looking each up among all members made many unknown keys quadratic.
        var present: Set<String>?
        for (index, member) in members.enumerated() {
            var matched = false
            if let entry = rules.properties.index(forKey: member.key), rules.properties[entry].key.hasSameCodePoints(as: member.key) {
                let subschema = rules.properties[entry].value
                matched = true
                if isFalse(subschema) {
                    valid = false
                    guard reporting else { return false }
                    report(
                        schema, "properties", member.value,
                        "field \(ViolationMessages.quoted(member.key)) is not allowed", at: member.keyLocation,
                        appending: .key(member.key))
                } else if !descend(subschema, into: member.value, key: member.key) {
                    valid = false
                    if !reporting { return false }
                }
            }
            for entry in rules.patterns where entry.pattern.matches(member.key) {
                matched = true
                if !descend(entry.schema, into: member.value, key: member.key) {
                    valid = false
                    if !reporting { return false }
                }
            }
            if !matched, let additional = rules.additional {
                matched = true
                if isFalse(additional) {
                    valid = false
                    guard reporting else { return false }
                    if present == nil { present = Set(members.map(\.key)) }
                    let candidates = rules.properties.keys.filter { [present] name in !present!.contains(name) }
                    report(
                        schema, "additionalProperties", member.value,
                        ViolationMessages.unknownField(member.key, candidates: candidates), at: member.keyLocation,
                        appending: .key(member.key))
                } else if !descend(additional, into: member.value, key: member.key) {
                    valid = false
                    if !reporting { return false }
                }
            }
            if matched { local?.properties.insert(index) }
        }
        return valid
    }

    private mutating func applyPropertyNames(_ members: [Node.Member], _ subschema: Int) -> Bool {
        var valid = true
        for member in members {
            let name = Node(.string(member.key), at: member.keyLocation)
            let start = findings.count
            if !descend(subschema, into: name, key: member.key) {
                valid = false
                if !reporting { return false }
                // The violations are about the name, not the field's value.
                for index in start..<findings.count {
                    findings[index].violation.message =
                        "invalid field name \(ViolationMessages.quoted(member.key)): " + findings[index].violation.message
                }
            }
        }
        return valid
    }

    private mutating func applyUnevaluatedProperties(
        _ members: [Node.Member], _ subschema: Int, _ schema: Int, _ local: inout Annotations?
    ) -> Bool {
        var valid = true
        var present: Set<String>?
        for (index, member) in members.enumerated() where !(local?.properties.contains(index) ?? false) {
            if isFalse(subschema) {
                valid = false
                guard reporting else { return false }
                if present == nil { present = Set(members.map(\.key)) }
                let candidates = declaredProperties(of: schema).filter { [present] name in !present!.contains(name) }
                report(
                    schema, "unevaluatedProperties", member.value,
                    ViolationMessages.unknownField(member.key, candidates: candidates), at: member.keyLocation,
                    appending: .key(member.key))
            } else if !descend(subschema, into: member.value, key: member.key) {
                valid = false
                if !reporting { return false }
            }
        }
        local?.properties.all = true
        return valid
    }

    /// The property names a schema declares through its in-place applicators: the
    /// fields an `unevaluatedProperties: false` schema knows, for suggestions.
    private func declaredProperties(of schema: Int) -> Set<String> {
        var names = Set<String>()
        var visited = Set<Int>()
        var pending = [schema]
        while let id = pending.popLast() {
            guard visited.insert(id).inserted, case .keywords(let keywords) = schemas[id].body else { continue }
            for keyword in keywords {
                switch keyword {
                case .properties(let rules): names.formUnion(rules.properties.keys)
                case .allOf(let ids), .anyOf(let ids), .oneOf(let ids): pending += ids
                case .conditional(let condition, let then, let otherwise):
                    pending += [condition, then, otherwise].compactMap { $0 }
                case .dependentSchemas(let dependencies): pending += dependencies.map(\.schema)
                case .ref(let target, _), .dynamicRef(let target, _, _): pending.append(target)
                default: break
                }
            }
        }
        return names
    }

    private mutating func follow(
        _ target: Int, _ keyword: String, _ reference: String, _ schema: Int, _ instance: Node,
        _ local: inout Annotations?
    ) -> Bool {
        for frame in references.reversed() {
            guard frame.depth == depth else { break }
            if frame.target == target {
                report(
                    schema, keyword, instance,
                    "\(keyword) \"\(reference)\" leads back to itself without descending into the value (infinite recursion)")
                return false
            }
        }
        references.append((target, depth))
        defer { references.removeLast() }
        return evaluate(target, instance, &local)
    }

    // MARK: Reporting

    /// Reports a failed alternative (`anyOf`/`oneOf` with no match) as the one or two
    /// messages most likely to help, instead of every error of every branch:
    /// - when every branch rejects the value's type: one "expected A or B" message;
    /// - when every branch rejects the same value (the value itself or a
    ///   discriminator field such as `kind`) by `const`/`enum`: one list of the
    ///   allowed values;
    /// - otherwise the errors of the branch that fits best: one whose discriminators
    ///   match, with the fewest errors.
    private mutating func reportAlternatives(
        _ branches: [Int], _ keyword: String, _ schema: Int, _ instance: Node, _ local: inout Annotations?
    ) {
        guard reporting else { return }
        var attempts: [(findings: [Finding], annotations: Annotations?)] = []
        for branch in branches {
            let start = findings.count
            var annotations: Annotations? = local == nil ? nil : Annotations()
            _ = evaluate(branch, instance, &annotations)
            attempts.append((Array(findings[start...]), annotations))
            findings.removeSubrange(start...)
        }
        let base = path.count

        var types: JSONTypes = []
        let allRejectType = attempts.allSatisfy { attempt in
            guard attempt.findings.count == 1, attempt.findings[0].violation.path.components.count == base,
                case .type(let allowed) = attempt.findings[0].detail
            else { return false }
            types.formUnion(allowed)
            return true
        }
        if allRejectType {
            report(schema, keyword, instance, "expected \(types.description), got \(ViolationMessages.describe(instance))")
            return
        }

        var discriminator: (path: ValuePath, location: SourceLocation, got: Node)?
        var allowed: [Node] = []
        let allRejectValue = attempts.allSatisfy { attempt in
            for finding in attempt.findings {
                guard case .values(let values, let got) = finding.detail,
                    finding.violation.path.components.count <= base + 1
                else { continue }
                if discriminator == nil { discriminator = (finding.violation.path, finding.violation.location, got) }
                guard discriminator?.path == finding.violation.path else { return false }
                allowed += values.filter { !allowed.contains($0) }
                return true
            }
            return false
        }
        if allRejectValue, let discriminator {
            findings.append(
                Finding(
                    violation: SchemaViolation(
                        path: discriminator.path, location: discriminator.location, keyword: keyword,
                        schemaLocation: schemas[schema].location + "/" + keyword,
                        message: ViolationMessages.notOneOf(discriminator.got, allowed)),
                    detail: .values(allowed, got: discriminator.got)))
            return
        }

        func misses(_ findings: [Finding]) -> Bool {
            findings.contains { finding in
                switch finding.detail {
                case .type: finding.violation.path.components.count == base
                case .values: finding.violation.path.components.count <= base + 1
                case .other: false
                }
            }
        }
        let best = attempts.indices.min { a, b in
            let (missA, missB) = (misses(attempts[a].findings), misses(attempts[b].findings))
            return missA != missB ? !missA : attempts[a].findings.count < attempts[b].findings.count
        }!
        findings += attempts[best].findings
        if let annotations = attempts[best].annotations { local?.formUnion(annotations) }
    }

    /// Records a violation of `keyword` (nil for a `false` schema) at `instance`,
    /// or at its member/element `component` with an explicit `location`. The message
    /// is only built when reporting.
    private mutating func report(
        _ schema: Int, _ keyword: String?, _ instance: Node, _ message: @autoclosure () -> String,
        at location: SourceLocation? = nil, appending component: ValuePath.Component? = nil,
        detail: Finding.Detail = .other
    ) {
        guard reporting else { return }
        var components = path
        if let component { components.append(component) }
        let schemaLocation = schemas[schema].location + (keyword.map { "/" + $0 } ?? "")
        findings.append(
            Finding(
                violation: SchemaViolation(
                    path: ValuePath(components), location: location ?? instance.location, keyword: keyword ?? "false",
                    schemaLocation: schemaLocation, message: message()),
                detail: detail))
    }
}
