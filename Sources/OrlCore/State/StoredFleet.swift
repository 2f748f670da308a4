import OrlJSON

extension Fleet {
    /// The fleet the store holds: each stored manifest read back (and validated against
    /// its schema again) as a resource. A manifest that no longer parses is unreadable,
    /// as a broken file is for `validate`, and named in `unreadable`.
    public static func applied(_ stored: [StoredResource]) -> (fleet: Fleet, unreadable: Set<ResourceID>) {
        var read = ReadManifests()
        var unreadable: Set<ResourceID> = []
        let reader = ManifestReader()
        var origins: [ResourceID: CodeOrigin] = [:]
        for resource in stored {
            if let origin = CodeOrigin(resource) { origins[resource.id] = origin }
            let file = "<state>/\(resource.id)"
            guard let root = try? JSONParser.parse(resource.manifest, file: file) else {
                read.unreadable.append(resource.id)
                unreadable.insert(resource.id)
                continue
            }
            read.append(reader.read(SourceDocument(file: file, index: 0, root: root)))
        }
        if !origins.isEmpty {
            read.resources = read.resources.map { resource in origins[resource.id].map { resource.with(origin: $0) } ?? resource }
        }
        return (Fleet.assemble(read.resources, unreadable: read.unreadable).0, unreadable)
    }
}
