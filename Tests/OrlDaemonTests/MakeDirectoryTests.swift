import Foundation
import Glibc
import OrlCore
import Testing

@testable import OrlController

/// The agents' working directories: made with every missing parent (0700), found with one
/// look when they exist, and an error that names the component that could not be made.
@Suite struct MakeDirectoryTests {
    @Test func makesMissingParentsFindsWhatExistsAndNamesWhatCannotBeMade() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("orl-mkdir-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        try Controller.makeDirectory("\(base)/agents/default/first")
        try Controller.makeDirectory("\(base)/agents/default/second")
        try Controller.makeDirectory("\(base)/agents/default/second")
        for path in [base, "\(base)/agents", "\(base)/agents/default", "\(base)/agents/default/first", "\(base)/agents/default/second"] {
            // Through FileManager, not Glibc's `stat`: in a clean build's batch of files the
            // compiler can take that struct's members for CDispatch's (MemberImportVisibility).
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect(attributes[.type] as? FileAttributeType == .typeDirectory, "\(path)")
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o700, "\(path)")
        }
        try "".write(toFile: "\(base)/file", atomically: false, encoding: .utf8)
        let error = #expect(throws: RuntimeError.self) { try Controller.makeDirectory("\(base)/file/sub/agent") }
        #expect(error?.message == "cannot create the directory \(base)/file/sub: Not a directory")
    }
}

/// A state directory removed under the controller stays removed: an agent's start makes
/// its directories below the state, never the state itself.
@Suite struct MakeDirectoryBelowStateTests {
    @Test func aRemovedStateIsNotMadeAgain() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("orl-mkdir-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let state = "\(base)/state"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try Controller.makeDirectory("\(state)/agents/default/first", below: state)
        try Controller.makeDirectory("\(state)/logs/default", below: state)
        #expect(access("\(state)/agents/default/first", F_OK) == 0 && access("\(state)/logs/default", F_OK) == 0)

        try FileManager.default.removeItem(atPath: state)
        let error = #expect(throws: RuntimeError.self) { try Controller.makeDirectory("\(state)/agents/default/second", below: state) }
        #expect(error?.message == "the state directory \(state) is gone")
        #expect(access(state, F_OK) != 0)
        // Outside the state (an absolute workingDir), every missing parent is made as before.
        try Controller.makeDirectory("\(base)/elsewhere/work", below: state)
        #expect(access("\(base)/elsewhere/work", F_OK) == 0 && access(state, F_OK) != 0)
    }
}
