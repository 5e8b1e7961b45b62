"""Queries, handles and SmartMatch calls, as MultiplayerTests.cpp, MultiplayerManagerTests.cpp
and MatchmakingTests.cpp (microsoft/xbox-live-api) make the library send them.

Request bodies are our own values in the shapes those tests expect the library to
write (handle posts: multiplayer_activity_handle_post_request.cpp,
multiplayer_invite_handle_post_request.cpp, multiplayer_transfer_handle_post_request.cpp,
multiplayer_search_handle_request.cpp; queries: multiplayer_service.cpp). Answer shapes
are what the parsers read: `VerifyMultiplayerSessionStates`, `VerifyActivityDetails`,
`VerifySearchHandleDetails` in MultiplayerTests.cpp, and match_ticket_details_response.cpp,
create_match_ticket_response.cpp, hopper_statistics_response.cpp (a ticket's status is
`ticketStatus`, a hopper's name `name`).
"""

from __future__ import annotations

from mpsdproxy.conformance.calls_sessions import DOCUMENT
from mpsdproxy.conformance.calls_sessions import SESSION_HEADERS
from mpsdproxy.conformance.calls_sessions import UPDATE
from mpsdproxy.conformance.spec import SMARTMATCH_CONTRACT
from mpsdproxy.conformance.spec import Call
from mpsdproxy.conformance.spec import Expect

TEMPLATE = "/serviceconfigs/{scid}/sessiontemplates/{lobby_template}"
HOPPER = "/serviceconfigs/{scid}/hoppers/{hopper}"
LOBBY_REF = {"scid": "{scid}", "templateName": "{lobby_template}", "name": "{lobby}"}
GAME_REF = {"scid": "{scid}", "templateName": "{game_template}", "name": "{game}"}
SESSION_REF = (("scid", "string"), ("templateName", "string"), ("name", "string"))

STATES = tuple((f"results.*.sessionRef.{k}", t) for k, t in SESSION_REF) + (
    ("results.*.xuid", "digits"),
    ("results.*.startTime", "datetime"),
    ("results.*.accepted", "int"),
    ("results.*.status", "string"),
    ("results.*.visibility", "string"),
    ("results.*.joinRestriction", "string"),
    ("results.*.myTurn", "bool"),
    ("results.*.keywords", "array"),
)

HANDLE = tuple((f"sessionRef.{k}", t) for k, t in SESSION_REF) + (
    ("id", "string"), ("version", "int"))

ACTIVITY = tuple((f"results.*.sessionRef.{k}", t) for k, t in SESSION_REF) + (
    ("results.*.id", "string"),
    ("results.*.titleId", "digits"),
    ("results.*.ownerXuid", "digits"),
    ("results.*.inviteProtocol", "string"),
    ("results.*.relatedInfo.joinRestriction", "string"),
    ("results.*.relatedInfo.closed", "bool"),
    ("results.*.relatedInfo.maxMembersCount", "int"),
    ("results.*.relatedInfo.membersCount", "int"),
    ("results.*.customProperties", "object"),
)

SEARCH = tuple((f"results.*.sessionRef.{k}", t) for k, t in SESSION_REF) + (
    ("results.*.id", "string"),
    ("results.*.createTime", "datetime"),
    ("results.*.searchAttributes.tags", "array"),
    ("results.*.searchAttributes.strings", "object"),
    ("results.*.searchAttributes.numbers", "object"),
    ("results.*.relatedInfo.joinRestriction", "string"),
    ("results.*.relatedInfo.closed", "bool"),
    ("results.*.relatedInfo.maxMembersCount", "int"),
    ("results.*.relatedInfo.membersCount", "int"),
    ("results.*.relatedInfo.sessionOwners", "array"),
)

TICKET_STATUS = "one of unknown|expired|searching|found|canceled"

QUERY_CALLS: tuple[Call, ...] = (
    Call(
        "sessions.query-xuid", ("MultiplayerTests::TestGetSessionsAsync",),
        "GET", TEMPLATE + "/sessions?xuid={host_xuid}&visibility=open&private=true"
        "&reservations=true&inactive=true&take=100",
        expect=Expect((200,), (), STATES),
    ),
    Call(
        "sessions.query-keyword", ("MultiplayerTests::TestGetSessionsAsync",),
        "GET", TEMPLATE + "/sessions?keyword=harbor&take=100",
        # `xuid` names the member a result was found for: a keyword query has none.
        expect=Expect((200,), (), tuple(f for f in STATES if f[0] != "results.*.xuid")),
    ),
    Call(
        "sessions.batch", ("MultiplayerTests::TestGetSessionWithFiltersAsync",),
        # private=true / reservations=true need the filter to be the caller alone (403
        # otherwise, protocol notes §1.3), so this batch asks for neither.
        "POST", TEMPLATE + "/batch?visibility=open&take=100",
        body={"xuids": ["{host_xuid}", "{guest_xuid}"]},
        expect=Expect((200,), (), STATES),
    ),
)

HANDLE_CALLS: tuple[Call, ...] = (
    Call(
        "handle.activity-set", ("MultiplayerTests::TestSetActivityAsync",
                                "MultiplayerManagerTests::TestAddLocalUser"),
        "POST", "/handles",
        body={"version": 1, "type": "activity", "sessionRef": LOBBY_REF},
        expect=Expect((200, 201), (), HANDLE + (("titleId", "digits"), ("ownerXuid", "digits"),
                                               ("type", '="activity"'))),
        saves=(("activity_handle", "json:id"),),
    ),
    Call(
        "handle.activity-query-users", ("MultiplayerTests::TestGetActivitiesForUsersAsync",
                                        "MultiplayerTests::TestClearActivityAsync"),
        "POST", "/handles/query?include=relatedInfo,customProperties",
        body={"type": "activity", "scid": "{scid}", "owners": {"xuids": ["{host_xuid}"]}},
        expect=Expect((200,), (), ACTIVITY),
    ),
    Call(
        "handle.activity-query-social", ("MultiplayerTests::TestGetActivitiesForSocialGroupAsync",),
        "POST", "/handles/query?include=relatedInfo,customProperties",
        who="guest",
        body={"type": "activity", "scid": "{scid}",
              "owners": {"people": {"moniker": "friends", "monikerXuid": "{guest_xuid}"}}},
        # Who is whose friend is the target's social graph: none may be listed.
        expect=Expect((200,), (), (("results", "array"),) + ACTIVITY, may_be_empty=True),
    ),
    Call(
        "session.get-by-handle", ("MultiplayerTests::TestGetCurrentSessionWithHandleAsync",),
        "GET", "/handles/{activity_handle}/session",
        expect=Expect((200,), SESSION_HEADERS, DOCUMENT),
    ),
    Call(
        "handle.invite", ("MultiplayerTests::TestSendInvitesAsync",
                          "MultiplayerManagerTests::TestInviteUsers"),
        "POST", "/handles",
        body={"version": 1, "type": "invite", "sessionRef": LOBBY_REF,
              "invitedXuid": "{guest_xuid}", "inviteAttributes": {"titleId": "{title_id}"}},
        expect=Expect((200, 201), (), HANDLE + (("type", '="invite"'),)),
    ),
    Call(
        "handle.transfer", ("MultiplayerTests::TestSetTransferHandleAsync",
                            "MultiplayerManagerTests::TestJoinGameFromLobbyWithTransferHandle"),
        "POST", "/handles",
        body={"version": 1, "type": "transfer", "sessionRef": GAME_REF,
              "originSessionRef": LOBBY_REF},
        expect=Expect((200, 201), (), HANDLE + (("type", '="transfer"'),)),
        saves=(("transfer_handle", "json:id"),),
    ),
    Call(
        "session.write-by-handle",
        ("MultiplayerManagerTests::TestJoinLobbyWithValidTransferHandle",
         "MultiplayerManagerTests::TestJoinGameFromLobbyWithTransferHandle"),
        "PUT", "/handles/{transfer_handle}/session",
        body={"members": {"me": {
            "constants": {"system": {"xuid": "{host_xuid}", "initialize": True}},
            "properties": {"system": {"active": True}}}}},
        expect=Expect((200, 201), SESSION_HEADERS, DOCUMENT + (
            ("members.0.deviceToken", "string"), ("members.0.gamertag", "string"))),
    ),
    Call(
        "handle.search-set", ("MultiplayerTests::TestSetSearchHandleAsync",),
        "POST", "/handles",
        body={"version": 1, "type": "search", "sessionRef": LOBBY_REF,
              "searchAttributes": {"tags": ["voicechat"], "numbers": {"skill": 14.5},
                                   "strings": {"region": "west"}}},
        expect=Expect((200, 201), (), HANDLE),
        saves=(("search_handle", "json:id"),),
    ),
    Call(
        "handle.search-query", ("MultiplayerTests::TestGetSearchHandlesAsync_1",
                                "MultiplayerTests::TestGetSearchHandlesAsync_2",
                                "MultiplayerTests::TestGetSearchHandlesAsync_3"),
        "POST", "/handles/query?include=relatedInfo,roleInfo,customProperties",
        body={"type": "search", "scid": "{scid}", "templateName": "{lobby_template}",
              "orderBy": "numbers/skill desc", "filter": "numbers/skill gt 10"},
        expect=Expect((200,), (), SEARCH),
    ),
    Call(
        "handle.search-clear", ("MultiplayerTests::TestClearSearchHandleAsync",),
        "DELETE", "/handles/{search_handle}", expect=Expect((200, 204)),
    ),
    Call(
        "handle.activity-clear", ("MultiplayerTests::TestClearActivityAsync",),
        "DELETE", "/handles/{activity_handle}", expect=Expect((200, 204)),
    ),
)

MATCHMAKING_CALLS: tuple[Call, ...] = (
    Call(
        "ticket.create", ("MatchmakingTests::TestCreateMatchTicketAsync",
                          "MultiplayerManagerTests::TestFindMatchNoQoSCompleted"),
        "POST", HOPPER, contract=SMARTMATCH_CONTRACT,
        body={"giveUpDuration": 30, "preserveSession": "never",
              "ticketAttributes": {"arena": "north", "mode": "duel"},
              "ticketSessionRef": LOBBY_REF},
        expect=Expect((200, 201), (), (("ticketId", "string"), ("waitTime", "int"))),
        saves=(("ticket", "json:ticketId"),),
    ),
    Call(
        "ticket.get", ("MatchmakingTests::TestGetMatchTicketAsync",),
        "GET", HOPPER + "/tickets/{ticket}", contract=SMARTMATCH_CONTRACT,
        expect=Expect((200,), (), (
            ("ticketStatus", TICKET_STATUS), ("waitTime", "int"),
            ("preserveSession", "one of always|never"),
            ("ticketAttributes", "object"),
        ) + tuple((f"ticketSessionRef.{k}", t) for k, t in SESSION_REF)),
    ),
    Call(
        "session.matchmaking-status",
        ("MultiplayerManagerTests::TestFindMatchNoQoSCompleted",
         "MultiplayerManagerTests::TestFindMatchNoQoSExpiredByService"),
        "GET", "/serviceconfigs/{scid}/sessionTemplates/{lobby_template}/sessions/{lobby}",
        # The ticket session carries the ticket's progress (multiplayer_session.cpp reads
        # servers.matchmaking.properties.system; MultiplayerManager's match client acts on it).
        expect=Expect((200,), SESSION_HEADERS, (
            ("servers.matchmaking.properties.system.status",
             "one of searching|found|expired|canceled"),)),
    ),
    Call(
        "hopper.stats", ("MatchmakingTests::TestGetStatsForHopperAsync",),
        "GET", HOPPER + "/stats", contract=SMARTMATCH_CONTRACT,
        expect=Expect((200,), (), (("name", '="{hopper}"'), ("waitTime", "int"),
                                   ("population", "int"))),
    ),
    Call(
        "ticket.delete", ("MatchmakingTests::TestDeleteMatchTicketAsync",),
        "DELETE", HOPPER + "/tickets/{ticket}", contract=SMARTMATCH_CONTRACT,
        expect=Expect((200, 202, 204)),
    ),
    Call(
        "session.leave-lobby", ("MultiplayerManagerTests::TestRemoveLocalUser",),
        "PUT", "/serviceconfigs/{scid}/sessionTemplates/{lobby_template}/sessions/{lobby}",
        headers=UPDATE, body={"members": {"me": None}},
        expect=Expect((200, 204)),
    ),
)
