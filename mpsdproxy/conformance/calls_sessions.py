"""Session writes and reads, as MultiplayerTests.cpp and MultiplayerManagerTests.cpp
(microsoft/xbox-live-api, Tests/UnitTests/Tests/Services/) make the library send them.

Every request here is our own test data (our names, XUIDs and values) re-expressing
what the named test has the library write; the answer shapes are what the library's
session parser reads (multiplayer_session.cpp `_Deserialize`, multiplayer_session_member.cpp),
as `VerifyMultiplayerSession` / `VerifyMultiplayerMember` in those tests check them.
Member keys in a session that is not large are indices ("0" the host, "1" the guest),
as the library reads them (`members[i]` for first <= i < count).
"""

from __future__ import annotations

from mpsdproxy.conformance.spec import Call
from mpsdproxy.conformance.spec import Expect

LOBBY = "/serviceconfigs/{scid}/sessionTemplates/{lobby_template}/sessions/{lobby}"
GAME = "/serviceconfigs/{scid}/sessionTemplates/{game_template}/sessions/{game}"
BUILT = "/serviceconfigs/{scid}/sessionTemplates/{game_template}/sessions/{built}"
LARGE = "/serviceconfigs/{scid}/sessionTemplates/{large_template}/sessions/{large}"

# What multiplayer_session.cpp reads from every session document.
DOCUMENT = (
    ("changeNumber", "int"),
    ("correlationId", "string"),
    ("startTime", "datetime"),
    ("branch", "string"),
    ("constants.system", "object"),
    ("constants.system.maxMembersCount", "int"),
    ("constants.system.visibility", "string"),
    ("constants.custom", "present"),
    ("properties.system", "object"),
    ("properties.system.turn", "array"),
    ("properties.system.joinRestriction", "string"),
    ("properties.system.readRestriction", "string"),
    ("properties.custom", "object"),
    ("membersInfo.first", "int"),
    ("membersInfo.next", "int"),
    ("membersInfo.count", "int"),
    ("membersInfo.accepted", "int"),
    ("members", "object"),
    ("members.*.constants.system.xuid", "digits"),
    ("members.*.constants.system.index", "int"),
    ("servers", "object"),
)

# What the library needs of an active member (VerifyMultiplayerMember; MultiplayerManager's
# host election compares `deviceToken` with properties.system.host).
HOST_MEMBER = (
    ("members.0.gamertag", "string"),
    ("members.0.deviceToken", "string"),
    ("members.0.activeTitleId", "digits"),
    ("members.0.joinTime", "datetime"),
    ("members.0.properties.system", "object"),
    ("members.0.properties.custom", "object"),
)
GUEST_MEMBER = tuple((path.replace("members.0", "members.1"), kind) for path, kind in HOST_MEMBER)

SESSION_HEADERS = ("ETag", "Content-Type")
UPDATE = (("If-Match", "*"),)  # MultiplayerSessionWriteMode::UpdateExisting
CREATE = (("If-None-Match", "*"),)  # MultiplayerSessionWriteMode::CreateNew
SUBSCRIPTION_ID = "6f1b3c2e-0000-4000-8000-00000000c0f1"


def _written(status: tuple[int, ...], *fields: tuple[str, str]) -> Expect:
    return Expect(status, SESSION_HEADERS, DOCUMENT + tuple(fields))


def _me(xuid: str, **extra: object) -> dict[str, object]:
    member: dict[str, object] = {"constants": {"system": {"xuid": xuid, "initialize": True}}}
    member.update(extra)
    return {"members": {"me": member}}


SESSION_CALLS: tuple[Call, ...] = (
    Call(
        "session.create", ("MultiplayerTests::TestCreateSessionAsync",
                           "MultiplayerManagerTests::TestAddLocalUser"),
        "PUT", LOBBY, headers=CREATE,
        body={"members": {"me": {
            "constants": {"system": {"xuid": "{host_xuid}", "initialize": True},
                          "custom": "Hi there"},
            "properties": {"system": {
                "active": True, "secureDeviceAddress": "AQIDBAUG",
                "groups": ["red-team", "squad.7"], "encounters": ["Harbor-0001"],
                "subscription": {"id": SUBSCRIPTION_ID, "changeTypes": ["everything"]}},
                "custom": {"Health": 75}}}}},
        expect=_written((201,), *HOST_MEMBER, ("members.0.constants.custom", '="Hi there"'),
                        ("members.0.properties.system.active", "=true")),
        saves=(("first_etag", "header:ETag"), ("host_device", "json:members.0.deviceToken")),
    ),
    Call(
        "session.get", ("MultiplayerTests::TestGetCurrentSessionAsync",
                        "MultiplayerManagerTests::TestMultipleTaps_1"),
        "GET", LOBBY, expect=_written((200,), *HOST_MEMBER),
    ),
    Call(
        "session.join", ("MultiplayerTests::TestWriteSessionAsyncWithJoin1",
                         "MultiplayerTests::TestWriteSessionAsyncWithJoin2",
                         "MultiplayerTests::TestWriteSessionAsyncWithJoin4",
                         "MultiplayerManagerTests::TestJoinLobbyWithValidHandleId"),
        "PUT", LOBBY, who="guest", headers=UPDATE,
        body=_me("{guest_xuid}", properties={"system": {"active": True},
                                             "custom": {"Health": 60, "Skill": 12}}),
        expect=_written((200,), *HOST_MEMBER, *GUEST_MEMBER,
                        ("membersInfo.count", "=2"),
                        ("members.1.properties.custom.Skill", "=12")),
        saves=(("guest_device", "json:members.1.deviceToken"),),
    ),
    Call(
        "session.member-status",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetCurrentUserInactive",
         "MultiplayerTests::TestWriteSessionAsyncWithSetCurrentUserActive"),
        "PUT", LOBBY, who="guest", headers=UPDATE,
        body={"members": {"me": {"properties": {"system": {"active": False}}}}},
        expect=_written((200,), ("members.1.properties.system.active", "=false")),
    ),
    Call(
        "session.member-device-address",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetCurrentUserSecureDeviceAddressBase64",),
        "PUT", LOBBY, headers=UPDATE,
        body={"members": {"me": {"properties": {"system": {"secureDeviceAddress": "BwgJCg=="}}}}},
        expect=_written((200,), ("members.0.properties.system.secureDeviceAddress", '="BwgJCg=="')),
    ),
    Call(
        "session.member-custom-properties",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetCurrentUserMemberCustomPropertyJson",
         "MultiplayerManagerTests::TestAddLocalUser"),
        "PUT", LOBBY, headers=UPDATE,
        body={"members": {"me": {"properties": {"custom": {
            "Level": 12, "isReady": True, "label": "true", "gear": {"name": "B"},
            "path": [4, 3, 2]}}}}},
        expect=_written((200,), ("members.0.properties.custom.gear", '={"name": "B"}'),
                        ("members.0.properties.custom.path", "=[4, 3, 2]"),
                        ("members.0.properties.custom.Health", "=75")),
    ),
    Call(
        "session.member-custom-delete",
        ("MultiplayerTests::TestWriteSessionAsyncWithDeleteCurrentUserMemberCustomPropertyJson",
         "MultiplayerManagerTests::TestDeleteLocalMemberProperties"),
        "PUT", LOBBY, headers=UPDATE,
        body={"members": {"me": {"properties": {"custom": {"Level": None, "gear": None}}}}},
        expect=_written((200,), ("members.0.properties.custom.Level", "absent"),
                        ("members.0.properties.custom.gear", "absent"),
                        ("members.0.properties.custom.path", "=[4, 3, 2]")),
    ),
    Call(
        "session.custom-properties",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetSessionCustomPropertyJson",
         "MultiplayerManagerTests::TestSetSynchronizedLobbyProperties"),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"custom": {"Mode": "Capture", "Rules": {"rounds": 3},
                                        "ranked": False, "quote": "false", "cap": 20,
                                        "maps": ["Dock", "Yard"]}}},
        expect=_written((200,), ("properties.custom.Rules", '={"rounds": 3}'),
                        ("properties.custom.maps", '=["Dock", "Yard"]'),
                        ("properties.custom.ranked", "=false")),
    ),
    Call(
        "session.custom-delete",
        ("MultiplayerTests::TestWriteSessionAsyncWithDeleteSessionCustomPropertyJson",),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"custom": {"Mode": None, "quote": None}}},
        expect=_written((200,), ("properties.custom.Mode", "absent"),
                        ("properties.custom.cap", "=20")),
    ),
    Call(
        "session.keywords", ("MultiplayerTests::TestWriteSessionAsyncWithKeywords",),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"system": {"keywords": ["harbor"]}}},
        expect=_written((200,), ("properties.system.keywords", '=["harbor"]')),
    ),
    Call(
        "session.restrictions", ("MultiplayerTests::TestWriteSessionAsyncWithJoinRestriction",
                                 "MultiplayerTests::TestWriteSessionAsyncWithReadRestriction"),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"system": {"joinRestriction": "followed",
                                        "readRestriction": "followed"}}},
        expect=_written((200,), ("properties.system.joinRestriction", '="followed"'),
                        ("properties.system.readRestriction", '="followed"')),
    ),
    Call(
        "session.turn", ("MultiplayerTests::TestWriteSessionAsyncWithTurnCollection",),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"system": {"turn": [1]}}},
        expect=_written((200,), ("properties.system.turn", "=[1]")),
    ),
    Call(
        "session.matchmaking-properties",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetMatchmakingProperties",
         "MultiplayerTests::WriteSessionAsyncWithSetMatchmakingConstantsJson",
         "MultiplayerTests::TestWriteSessionAsyncWithSetMatchmakingServerConnectionPath",
         "MultiplayerTests::TestWriteSessionAsyncWithSetMatchmakingResubmit",
         "MultiplayerTests::TestWriteSessionAsyncWithSetServerConnectionStringCandidates"),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"system": {
            "matchmaking": {"targetSessionConstants": {"arena": "north"},
                            "serverConnectionString": "relay-7"},
            "matchmakingResubmit": True,
            "serverConnectionStringCandidates": ["relay-7", "relay-8"]}}},
        expect=_written((200,),
                        ("properties.system.matchmaking.targetSessionConstants",
                         '={"arena": "north"}'),
                        ("properties.system.matchmaking.serverConnectionString", '="relay-7"'),
                        ("properties.system.matchmakingResubmit", "=true")),
    ),
    Call(
        "session.initialization-status",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetInitializationStatus",),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"system": {"initializationSucceeded": True}}},
        expect=_written((200,), ("properties.system.initializationSucceeded", "=true")),
    ),
    Call(
        "session.servers", ("MultiplayerTests::TestWriteSessionAsyncWithServersJson",),
        "PUT", LOBBY, headers=UPDATE,
        body={"servers": {"scoreboard": 250}},
        expect=_written((200,), ("servers.scoreboard", "=250")),
    ),
    Call(
        "session.members-in-group",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetCurrentUserMembersInGroup",),
        "PUT", LOBBY, headers=UPDATE,
        body={"members": {"me": {"properties": {"system": {"membersInGroup": [0, 1]}}}}},
        expect=_written((200,), ("members.0.properties.system.membersInGroup", "=[0, 1]")),
    ),
    Call(
        "session.qos-measurements",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetCurrentUserQualityOfServiceMeasurements",
         "MultiplayerTests::"
         "TestWriteSessionAsyncWithSetCurrentUserQualityOfServiceServerMeasurementsJson"),
        "PUT", LOBBY, headers=UPDATE,
        body={"members": {"me": {"properties": {"system": {
            "measurements": {"{guest_device}": {"latency": 41, "bandwidthDown": 9000,
                                                "bandwidthUp": 3000, "custom": {"jitter": 2}}},
            "serverMeasurements": {"relay-7": {"latency": 18}}}}}}},
        expect=_written((200,), ("members.0.properties.system.measurements", "object"),
                        ("members.0.properties.system.serverMeasurements", "object")),
    ),
    Call(
        "session.subscription", ("MultiplayerTests::TestMultiplayerSubscribeChangeTypes",),
        "PUT", LOBBY, headers=UPDATE,
        body={"members": {"me": {"properties": {"system": {"subscription": {
            "id": SUBSCRIPTION_ID,
            "changeTypes": ["host", "initialization", "matchmakingStatus", "membersList",
                            "membersStatus", "joinability", "customProperty",
                            "membersCustomProperty"]}}}}}},
        expect=_written((200,), ("members.0.properties.system.subscription.changeTypes",
                                 "array")),
    ),
    Call(
        "session.synchronized-write",
        ("MultiplayerTests::TestSynchronizedUpdateAsync",
         "MultiplayerTests::TestWriteSessionAsyncWithSetHostDeviceToken",
         "MultiplayerManagerTests::TestSetSynchronizedLobbyProperties"),
        "PUT", LOBBY, headers=(("If-Match", "{etag}"),),  # the ETag of the last answer
        body={"properties": {"system": {"host": "{host_device}"}}},
        expect=_written((200,), ("properties.system.host", "string"),
                        ("members.0.deviceToken", "string")),
    ),
    Call(
        "session.out-of-sync", ("MultiplayerTests::TestTryWriteSessionAsync",
                                "MultiplayerManagerTests::TestBackToBackSessionWriteLogic_1"),
        "PUT", LOBBY, headers=(("If-Match", "{first_etag}"),),
        body={"properties": {"custom": {"cap": 24}}},
        expect=Expect((412,), SESSION_HEADERS, DOCUMENT),
    ),
    Call(
        "session.member-reservation",
        ("MultiplayerTests::TestWriteSessionAsyncWithAddMemberReservation",),
        "PUT", LOBBY, headers=UPDATE,
        body={"members": {"reserve_0": {"constants": {
            "system": {"xuid": "{reserved_xuid}", "initialize": True},
            "custom": {"rank": 31}}}}},
        expect=_written((200,), ("members.2.reserved", "=true"),
                        ("members.2.constants.custom", '={"rank": 31}')),
    ),
    Call(
        "session.leave", ("MultiplayerTests::TestWriteSessionAsyncWithLeave",
                          "MultiplayerManagerTests::TestRemoveLocalUser"),
        "PUT", LOBBY, who="guest", headers=UPDATE,
        body={"members": {"me": None}},
        expect=_written((200,), ("members.1", "absent")),
    ),
    Call(
        "session.create-constants",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetTimeouts",
         "MultiplayerTests::TestWriteSessionAsyncWithSetArbitrationTimeouts",
         "MultiplayerTests::TestWriteSessionAsyncWithSetQualityOfServiceConnectivityMetrics",
         "MultiplayerTests::TestGetMeasurementServerAddresses",
         "MultiplayerTests::TestGetCloudComputePackageJson",
         "MultiplayerTests::TestWriteSessionAsyncWithSetMemberInitialization",
         "MultiplayerTests::TestWriteSessionAsyncWithSetPeerToPeerRequirements",
         "MultiplayerTests::TestWriteSessionAsyncWithSetPeerToHostRequirements"),
        "PUT", BUILT, headers=CREATE,
        body={"constants": {"system": {
            "reservedRemovalTimeout": 21000, "inactiveRemovalTimeout": 22000,
            "readyRemovalTimeout": 23000, "sessionEmptyTimeout": 24000,
            "arbitration": {"arbitrationTimeout": 25000, "forfeitTimeout": 26000},
            "metrics": {"latency": True, "bandwidthDown": True, "bandwidthUp": False,
                        "custom": False},
            "measurementServerAddresses": {"relay-west": {"secureDeviceAddress": "AQEB"}},
            "cloudComputePackage": {"crossSandbox": True, "titleId": "4321"},
            "memberInitialization": {"joinTimeout": 7000, "measurementTimeout": 8000,
                                     "evaluationTimeout": 9000, "externalEvaluation": False,
                                     "membersNeededToStart": 2},
            "peerToPeerRequirements": {"latencyMaximum": 250, "bandwidthMinimum": 512},
            "peerToHostRequirements": {"latencyMaximum": 180, "bandwidthDownMinimum": 1024,
                                       "bandwidthUpMinimum": 256,
                                       "hostSelectionMetric": "bandwidthup"}}},
            **_me("{host_xuid}")},
        expect=_written((201,), ("constants.system.reservedRemovalTimeout", "=21000"),
                        ("constants.system.sessionEmptyTimeout", "=24000"),
                        ("constants.system.memberInitialization.membersNeededToStart", "=2"),
                        ("constants.system.peerToHostRequirements.hostSelectionMetric",
                         '="bandwidthup"')),
    ),
    Call(
        "session.role-types",
        ("MultiplayerTests::TestWriteSessionAsyncWithSetMutableRoleSettings",
         "MultiplayerTests::TestCreateSessionAsync"),
        "PUT", LOBBY, headers=UPDATE,
        body={"roleTypes": {"lfg": {"roles": {"friend": {"max": 5, "target": 3}}}},
              "members": {"me": {"roles": {"lfg": "friend"}}}},
        expect=_written((200,), ("roleTypes.lfg.roles.friend.max", "=5"),
                        ("members.0.roles.lfg", '="friend"')),
    ),
    Call(
        "session.large-me", ("MultiplayerTests::TestLargeMemberSessionAsync",),
        "PUT", LARGE, headers=CREATE,
        body=_me("{host_xuid}", properties={"system": {"active": True}}),
        expect=Expect((201,), SESSION_HEADERS,
                      (("changeNumber", "int"), ("membersInfo.count", "int"),
                       ("members.me.constants.system.xuid", "digits"),
                       ("members.me.gamertag", "string"),
                       ("members.me.deviceToken", "string"))),
    ),
    Call(
        "session.closed-locked", ("MultiplayerTests::TestWriteSessionAsyncWithClosed",
                                  "MultiplayerTests::TestWriteSessionAsyncWithLocked"),
        "PUT", LOBBY, headers=UPDATE,
        body={"properties": {"system": {"closed": True, "locked": True}}},
        expect=_written((200,), ("properties.system.closed", "=true"),
                        ("properties.system.locked", "=true")),
    ),
)

# After the handles and matchmaking: the last member leaves and the session is gone.
CLOSING_CALLS: tuple[Call, ...] = (
    Call(
        "session.leave-last", ("MultiplayerTests::TestTryWriteSessionAsync",
                               "MultiplayerTests::TestHttpCalls",
                               "MultiplayerManagerTests::TestLeaveGame"),
        "PUT", GAME, headers=UPDATE, body={"members": {"me": None}},
        expect=Expect((204,)),
    ),
    Call(
        "session.get-missing", ("MultiplayerTests::TestHttpCalls",),
        "GET", GAME, expect=Expect((204,)),
    ),
)
