public import OrlJSON

/// The DAG of a Workflow: steps by index, edges from a dependency to its dependant.
///
/// Built once per workflow and shared by the structural checks here, the permission
/// audit and the run engine, so they all agree on what the graph is.
public struct WorkflowGraph: Sendable {
    public let steps: [WorkflowSpec.Step]
    /// Index of the first step with each id (later duplicates are reported, not indexed).
    public let index: [String: Int]
    /// `dependencies[i]`: indices of the steps step i waits for (resolved entries only).
    public let dependencies: [[Int]]
    /// `dependants[i]`: indices of the steps waiting for step i.
    public let dependants: [[Int]]
    /// `dataSources[i]`: the steps whose output step i receives (its dependencies, and
    /// the steps its inputs read, which may be further upstream), each with the place
    /// that says so (the `dependsOn` entry, or the input's `step`).
    public let dataSources: [[(step: Int, location: SourceLocation)]]
    /// `topicSources[i]`: the steps that publish a blackboard topic step i subscribes
    /// to, each with the `subscribe` entry that says so. Publisher and subscriber may run
    /// at once, so these are data edges that need not follow the DAG's order.
    public let topicSources: [[(step: Int, location: SourceLocation, topic: String)]]

    public init(_ spec: WorkflowSpec) {
        self = spec.graph
    }

    public init(steps: [WorkflowSpec.Step]) {
        self.steps = steps
        var index: [String: Int] = [:]
        for (i, step) in steps.enumerated() where index[step.id.value] == nil {
            index[step.id.value] = i
        }
        self.index = index
        var dependencies = [[Int]](repeating: [], count: steps.count)
        var dependants = [[Int]](repeating: [], count: steps.count)
        for (i, step) in steps.enumerated() where index[step.id.value] == i {
            for dep in step.dependsOn {
                guard let d = index[dep.value], !dependencies[i].contains(d) else { continue }
                dependencies[i].append(d)
                dependants[d].append(i)
            }
        }
        self.dependencies = dependencies
        self.dependants = dependants
        var dataSources = [[(step: Int, location: SourceLocation)]](repeating: [], count: steps.count)
        for (i, step) in steps.enumerated() where index[step.id.value] == i {
            // A step has a handful of sources: a linear check beats hashing.
            for dep in step.dependsOn {
                guard let d = index[dep.value], d != i, !dataSources[i].contains(where: { $0.step == d }) else { continue }
                dataSources[i].append((d, dep.location))
            }
            for (_, source) in step.inputs {
                guard case .stepOutput(let name, _) = source, let d = index[name.value], d != i,
                    !dataSources[i].contains(where: { $0.step == d })
                else { continue }
                dataSources[i].append((d, name.location))
            }
        }
        self.dataSources = dataSources
        var publishers: [String: [Int]] = [:]
        for (i, step) in steps.enumerated() where index[step.id.value] == i {
            for topic in step.publish { publishers[topic.value, default: []].append(i) }
        }
        var topicSources = [[(step: Int, location: SourceLocation, topic: String)]](repeating: [], count: steps.count)
        if !publishers.isEmpty {
            for (i, step) in steps.enumerated() where index[step.id.value] == i {
                for topic in step.subscribe {
                    for p in publishers[topic.value] ?? [] where p != i && !topicSources[i].contains(where: { $0.step == p }) {
                        topicSources[i].append((p, topic.location, topic.value))
                    }
                }
            }
        }
        self.topicSources = topicSources
    }

    /// Whether any step reads a blackboard topic another step publishes.
    public var hasTopics: Bool { topicSources.contains { !$0.isEmpty } }

    /// Steps that wait for nothing.
    public var roots: [Int] { steps.indices.filter { dependencies[$0].isEmpty && index[steps[$0].id.value] == $0 } }

    /// Every elementary cycle's representative: one cycle per strongly connected
    /// component that has one, as step indices with the first repeated at the end
    /// (`a → b → c → a`). Tarjan's algorithm, iterative, linear in steps and edges.
    public func cycles() -> [[Int]] {
        var order = [Int](repeating: -1, count: steps.count)
        var low = [Int](repeating: 0, count: steps.count)
        var onStack = [Bool](repeating: false, count: steps.count)
        var stack: [Int] = []
        var counter = 0
        var components: [[Int]] = []

        for start in steps.indices where order[start] == -1 {
            // (node, next edge to look at)
            var work: [(Int, Int)] = [(start, 0)]
            order[start] = counter
            low[start] = counter
            counter += 1
            stack.append(start)
            onStack[start] = true
            while let (node, edge) = work.last {
                if edge < dependencies[node].count {
                    work[work.count - 1].1 += 1
                    let next = dependencies[node][edge]
                    if order[next] == -1 {
                        order[next] = counter
                        low[next] = counter
                        counter += 1
                        stack.append(next)
                        onStack[next] = true
                        work.append((next, 0))
                    } else if onStack[next] {
                        low[node] = min(low[node], order[next])
                    }
                } else {
                    work.removeLast()
                    if let parent = work.last?.0 { low[parent] = min(low[parent], low[node]) }
                    if low[node] == order[node] {
                        var component: [Int] = []
                        while let top = stack.popLast() {
                            onStack[top] = false
                            component.append(top)
                            if top == node { break }
                        }
                        if component.count > 1 || dependencies[node].contains(node) {
                            components.append(component)
                        }
                    }
                }
            }
        }
        return components.map(cycle(in:)).sorted { $0[0] < $1[0] }
    }

    /// One cycle through the component, starting at its first-declared step and walking
    /// in the reading direction of `dependsOn` reversed, i.e. execution order.
    private func cycle(in component: [Int]) -> [Int] {
        let members = Set(component)
        let start = component.min()!
        // Breadth-first search from start back to start inside the component, along
        // dependant edges, gives a shortest cycle: the clearest one to show.
        var previous: [Int: Int] = [:]
        var queue = [start]
        var head = 0
        while head < queue.count {
            let node = queue[head]
            head += 1
            for next in dependants[node] where members.contains(next) {
                if next == start {
                    var chain: [Int] = []
                    var cursor = node
                    while cursor != start {
                        chain.append(cursor)
                        cursor = previous[cursor]!
                    }
                    return [start] + chain.reversed() + [start]
                }
                if previous[next] == nil {
                    previous[next] = node
                    queue.append(next)
                }
            }
        }
        return [start, start]
    }

    /// Steps in an order where every step comes after its dependencies, or nil when the
    /// graph has a cycle.
    public func topologicalOrder() -> [Int]? {
        var remaining = dependencies.map(\.count)
        var ready = steps.indices.filter { remaining[$0] == 0 }
        var order: [Int] = []
        order.reserveCapacity(steps.count)
        while let node = ready.popLast() {
            order.append(node)
            for next in dependants[node] {
                remaining[next] -= 1
                if remaining[next] == 0 { ready.append(next) }
            }
        }
        return order.count == steps.count ? order : nil
    }

    /// For each step, the set of steps that always finish before it (its transitive
    /// dependencies), as bit sets. Nil when the graph has a cycle.
    public func ancestors() -> [BitSet]? {
        guard let order = topologicalOrder() else { return nil }
        var result = [BitSet](repeating: BitSet(count: steps.count), count: steps.count)
        for node in order {
            for dep in dependencies[node] {
                result[node].formUnion(result[dep])
                result[node].insert(dep)
            }
        }
        return result
    }
}

/// A fixed-size set of small integers.
public struct BitSet: Sendable, Hashable {
    private var words: [UInt64]

    public init(count: Int) {
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    public func contains(_ i: Int) -> Bool { words[i >> 6] & (1 << UInt64(i & 63)) != 0 }
    public mutating func insert(_ i: Int) { words[i >> 6] |= 1 << UInt64(i & 63) }

    public mutating func formUnion(_ other: BitSet) {
        for i in words.indices { words[i] |= other.words[i] }
    }

    public func union(_ other: BitSet) -> BitSet {
        var result = self
        result.formUnion(other)
        return result
    }

    /// The members, in increasing order.
    public var elements: [Int] {
        var result: [Int] = []
        for (w, word) in words.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                result.append(w << 6 + bits.trailingZeroBitCount)
                bits &= bits - 1
            }
        }
        return result
    }
}
