extension Fleet {
    /// The fleet the store holds: each stored manifest read back (and validated against
    /// its schema again) as a resource. A manifest that no longer reads is unreadable,
    /// as a broken file is for `validate`.
    public init(stored: [StoredResource], reader: ManifestReader = ManifestReader()) {
        var read = ReadManifests()
        for resource in stored {
            let file = "<state>/\(resource.id)"
            guard let root = try? JSONParser.parse(resource.manifest, file: file) else {
                read.unreadable.append(resource.id)
                continue
            }
            read.append(reader.read(SourceDocument(file: file, index: 0, root: root)))
        }
        self = Fleet.assemble(read.resources, unreadable: read.unreadable).0
    }
}
