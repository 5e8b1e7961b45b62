"""The MPSD URI grammar on every URI form of the protocol notes (§1.2-§1.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpsdproxy import resources
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

SCID = "6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c"
SC = f"/serviceconfigs/{SCID}"
LOBBY = f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1"
HANDLE = "c3f4d5a6-1b2c-4d3e-8f4a-00000000c003"
TICKET = "2a2b1f24-0d7b-4b0e-9a1c-4c4b7d5e6f70"


def res(kind: Kind, scid: str | None = SCID, template: str | None = None,
        name: str | None = None, element: str | None = None) -> Resource:
    return Resource(kind, scid, template, name, element)


# (path, expected resource, expected short label)
URI_FORMS = [
    # §1.2 sessions and session elements
    (LOBBY, res(Kind.SESSION, template="LobbySession", name="Lobby-1"), "sessions/Lobby-1"),
    (f"{SC}/sessionTemplates/LobbySession/sessions/Lobby-1",
     res(Kind.SESSION, template="LobbySession", name="Lobby-1"), "sessions/Lobby-1"),
    (f"{LOBBY}?nocommit=true",
     res(Kind.SESSION, template="LobbySession", name="Lobby-1"), "sessions/Lobby-1"),
    (f"{LOBBY}/properties",
     res(Kind.PROPERTIES, template="LobbySession", name="Lobby-1", element="properties"),
     "sessions/Lobby-1/properties"),
    (f"{LOBBY}/members/me",
     res(Kind.MEMBER, template="LobbySession", name="Lobby-1", element="members/me"),
     "sessions/Lobby-1/members/me"),
    (f"{LOBBY}/members/3",
     res(Kind.MEMBER, template="LobbySession", name="Lobby-1", element="members/3"),
     "sessions/Lobby-1/members/3"),
    (f"{LOBBY}/servers/matchmaking",
     res(Kind.SERVER, template="LobbySession", name="Lobby-1", element="servers/matchmaking"),
     "sessions/Lobby-1/servers/matchmaking"),
    (f"{SC}/sessiontemplates", res(Kind.TEMPLATE), "sessiontemplates"),
    (f"{SC}/sessiontemplates/LobbySession", res(Kind.TEMPLATE, template="LobbySession"),
     "sessiontemplates/LobbySession"),
    # §1.3 queries and batch, at SCID and template level
    (f"{SC}/sessions?xuid=2533274800000001&visibility=open&private=true&inactive=true&take=10",
     res(Kind.QUERY), "sessions"),
    (f"{SC}/sessions?keyword=ranked&reservations=true", res(Kind.QUERY), "sessions"),
    (f"{SC}/sessiontemplates/LobbySession/sessions?xuid=1&take=100",
     res(Kind.QUERY, template="LobbySession"), "sessiontemplates/LobbySession/sessions"),
    (f"{SC}/sessionTemplates/LobbySession/sessions",
     res(Kind.QUERY, template="LobbySession"), "sessiontemplates/LobbySession/sessions"),
    (f"{SC}/batch", res(Kind.BATCH), "batch"),
    (f"{SC}/batch?private=true&take=10", res(Kind.BATCH), "batch"),
    (f"{SC}/sessiontemplates/LobbySession/batch?reservations=true",
     res(Kind.BATCH, template="LobbySession"), "sessiontemplates/LobbySession/batch"),
    # §1.4 handles
    ("/handles", res(Kind.HANDLE, scid=None), "handles"),
    (f"/handles/{HANDLE}", res(Kind.HANDLE, scid=None, element=HANDLE), f"handles/{HANDLE}"),
    (f"/handles/{HANDLE}/session", res(Kind.HANDLE_SESSION, scid=None, element=HANDLE),
     f"handles/{HANDLE}/session"),
    ("/handles/query", res(Kind.HANDLE_QUERY, scid=None), "handles/query"),
    ("/handles/query?include=relatedInfo", res(Kind.HANDLE_QUERY, scid=None), "handles/query"),
    ("/handles/query?include=relatedInfo,customProperties",
     res(Kind.HANDLE_QUERY, scid=None), "handles/query"),
    ("/handles/query?include=relatedInfo,roleInfo,customProperties",
     res(Kind.HANDLE_QUERY, scid=None), "handles/query"),
    # §1.5 SmartMatch
    (f"{SC}/hoppers/PlayerSkill", res(Kind.HOPPER, name="PlayerSkill"), "hoppers/PlayerSkill"),
    (f"{SC}/hoppers/PlayerSkill/stats", res(Kind.HOPPER, name="PlayerSkill", element="stats"),
     "hoppers/PlayerSkill/stats"),
    (f"{SC}/hoppers/PlayerSkill/tickets", res(Kind.TICKET, name="PlayerSkill"),
     "hoppers/PlayerSkill/tickets"),
    (f"{SC}/hoppers/PlayerSkill/tickets/{TICKET}",
     res(Kind.TICKET, name="PlayerSkill", element=TICKET),
     f"hoppers/PlayerSkill/tickets/{TICKET}"),
]


@pytest.mark.parametrize("path, expected, short", URI_FORMS)
def test_uri_forms(path, expected, short):
    resource = resources.parse(path)
    assert resource == expected
    assert resource.short == short


@pytest.mark.parametrize(
    "url, expected",
    [
        (f"https://sessiondirectory.xboxlive.com{LOBBY}",
         res(Kind.SESSION, template="LobbySession", name="Lobby-1")),
        (f"https://sessiondirectory.xboxlive.com:443{LOBBY}/members/me?nocommit=true#frag",
         res(Kind.MEMBER, template="LobbySession", name="Lobby-1", element="members/me")),
        (f"HTTPS://SessionDirectory.XboxLive.com/handles/{HANDLE}/session",
         res(Kind.HANDLE_SESSION, scid=None, element=HANDLE)),
        (f"https://smartmatch.xboxlive.com{SC}/hoppers/PlayerSkill/stats",
         res(Kind.HOPPER, name="PlayerSkill", element="stats")),
        (f"https://momatch.xboxlive.com{SC}/hoppers/PlayerSkill/tickets/{TICKET}",
         res(Kind.TICKET, name="PlayerSkill", element=TICKET)),
        (f"http://127.0.0.1:8081{SC}/sessions?xuid=1", res(Kind.QUERY)),
    ],
)
def test_full_urls(url, expected):
    assert resources.parse(url) == expected


@pytest.mark.parametrize(
    "path, expected",
    [
        (f"{SC}/sessiontemplates/Lobby%20Session/sessions/a%2Fb",
         res(Kind.SESSION, template="Lobby Session", name="a/b")),
        (f"{SC}/session%74emplates/LobbySession/sessions/Lobby-1",
         res(Kind.SESSION, template="LobbySession", name="Lobby-1")),
        (f"{LOBBY}/members/%6De", res(Kind.MEMBER, template="LobbySession", name="Lobby-1",
                                      element="members/me")),
        ("/handles/a%3Fb", res(Kind.HANDLE, scid=None, element="a?b")),
    ],
)
def test_percent_encoding(path, expected):
    assert resources.parse(path) == expected


@pytest.mark.parametrize(
    "path, expected",
    [
        (f"/SERVICECONFIGS/{SCID.upper()}/SESSIONTEMPLATES/LOBBYSESSION/SESSIONS/LOBBY-1",
         res(Kind.SESSION, scid=SCID.upper(), template="LOBBYSESSION", name="LOBBY-1")),
        (f"{SC}/SessionTemplates/LobbySession/Sessions/Lobby-1/Members/Me",
         res(Kind.MEMBER, template="LobbySession", name="Lobby-1", element="members/Me")),
        (f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1/PROPERTIES",
         res(Kind.PROPERTIES, template="LobbySession", name="Lobby-1", element="properties")),
        (f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1/Servers/Host",
         res(Kind.SERVER, template="LobbySession", name="Lobby-1", element="servers/Host")),
        ("/Handles/Query?include=relatedInfo", res(Kind.HANDLE_QUERY, scid=None)),
        (f"/HANDLES/{HANDLE}/SESSION", res(Kind.HANDLE_SESSION, scid=None, element=HANDLE)),
        (f"{SC}/Hoppers/PlayerSkill/STATS", res(Kind.HOPPER, name="PlayerSkill",
                                                element="stats")),
        (f"{SC}/Hoppers/PlayerSkill/Tickets/{TICKET}",
         res(Kind.TICKET, name="PlayerSkill", element=TICKET)),
        (f"{SC}/BATCH", res(Kind.BATCH)),
        (f"{SC}/Sessions?xuid=1", res(Kind.QUERY)),
    ],
)
def test_case_insensitive(path, expected):
    assert resources.parse(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/connections/",
        "/connect",
        "/serviceconfigs",
        f"{SC}",
        f"{SC}/unknown",
        f"{SC}/sessiontemplates/LobbySession/other",
        f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1/members",
        f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1/members/me/extra",
        f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1/servers",
        f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1/other",
        f"{SC}/sessiontemplates/LobbySession/sessions/Lobby-1/properties/extra",
        f"{SC}/hoppers",
        f"{SC}/hoppers/PlayerSkill/other",
        f"{SC}/hoppers/PlayerSkill/tickets/{TICKET}/extra",
        "/handles/a/b/c",
        f"/handles/{HANDLE}/other",
        "/users/xuid(1)/presence",
        "https://example.com/",
        "not a path at all",
        "http://[::1",
    ],
)
def test_unknown_paths(path):
    resource = resources.parse(path)
    assert resource.kind is Kind.UNKNOWN
    assert resource == Resource(Kind.UNKNOWN)
    assert resource.key is None
    assert resource.session_path is None


def test_key_is_lowercase_rta_form():
    # The trace: the client PUT used this spelling; the RTA tap named it in lower case.
    path = ("/serviceconfigs/6EFC0200-FD0E-4F4B-8B5C-7E3D0F4A1B2C/sessionTemplates/LobbySession"
            "/sessions/6F472513-0A0B-4C5D-8E9F-00000000A001")
    resource = resources.parse(path)
    assert resource.name == "6F472513-0A0B-4C5D-8E9F-00000000A001"  # kept as sent
    assert resource.key == (
        "6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c~lobbysession~6f472513-0a0b-4c5d-8e9f-00000000a001"
    )


def test_elements_share_the_session_key():
    session = resources.parse(LOBBY)
    for suffix in ("/members/me", "/members/0", "/servers/host", "/properties"):
        element = resources.parse(LOBBY.upper() + suffix)
        assert element.key == session.key
        assert element.is_element and element.is_session_or_element
    assert not session.is_element and session.is_session_or_element


def test_session_path_is_canonical():
    resource = resources.parse(f"{SC}/sessionTemplates/LobbySession/sessions/Lobby-1/members/me")
    assert resource.session_path == LOBBY


@pytest.mark.parametrize(
    "path",
    [f"{SC}/sessions", f"{SC}/batch", "/handles", f"{SC}/hoppers/h", f"{SC}/sessiontemplates"],
)
def test_non_sessions_have_no_key(path):
    resource = resources.parse(path)
    assert resource.kind is not Kind.UNKNOWN
    assert resource.key is None
    assert resource.session_path is None
    assert not resource.is_session_or_element


@pytest.mark.parametrize("path, expected, short", URI_FORMS)
def test_to_dict_from_dict_round_trip(path, expected, short):
    data = expected.to_dict()
    assert data["kind"] == expected.kind.value
    assert set(data) == {"kind", "scid", "template", "name", "element"}
    assert Resource.from_dict(data) == expected


@pytest.mark.parametrize("data", [{}, {"kind": "nonsense"}, {"kind": None}])
def test_from_dict_unknown_kind(data):
    assert Resource.from_dict(data).kind is Kind.UNKNOWN


def test_unknown_short_label():
    assert Resource(Kind.UNKNOWN).short == "?"


def test_resource_is_frozen():
    with pytest.raises(AttributeError):
        resources.parse(LOBBY).name = "other"  # type: ignore[misc]


@given(st.text())
def test_parse_never_raises(text):
    resource = resources.parse(text)
    assert isinstance(resource, Resource)
    assert Resource.from_dict(resource.to_dict()) == resource
    assert isinstance(resource.short, str)


@given(st.lists(st.sampled_from(["serviceconfigs", "sessiontemplates", "sessions", "members",
                                 "me", "handles", "query", "hoppers", "tickets", "stats",
                                 "batch", "servers", "properties", "session", "x", "%2F", "?"]),
                max_size=9),
       st.booleans())
def test_parse_never_raises_on_grammar_like_paths(segments, full_url):
    path = "/" + "/".join(segments)
    if full_url:
        path = "https://sessiondirectory.xboxlive.com" + path
    resource = resources.parse(path)
    assert isinstance(resource.short, str)
    if resource.is_session_or_element:
        assert resource.key == resource.key.lower()


@given(st.lists(st.sampled_from(["serviceconfigs", "ServiceConfigs", "sessiontemplates",
                                 "sessionTemplates", "sessions", "SESSIONS", "members",
                                 "Servers", "properties", "PROPERTIES", "me", "x", "a b", "é",
                                 "%41", "", "K", "\u212a", "ſessions"]),
                min_size=1, max_size=9),
       st.sampled_from(["", "?take=1", "#f", "/", "?u=http://x"]))
def test_a_path_reads_as_the_same_path_in_a_full_url(segments, tail):
    """However a session path is spelt, it names what the same path in a full URL
    names (a plainly spelt session path is read in one match, the rest by segments)."""
    path = "/" + "/".join(segments) + tail
    assert resources.parse(path) == resources.parse("https://sessiondirectory.xboxlive.com"
                                                    + path)


def test_key_follows_every_way_a_resource_is_made():
    """The key is worked out with the resource (from_dict, replace, pickle); it does
    not take part in equality or the repr."""
    import dataclasses
    import pickle

    session = resources.parse(LOBBY)
    assert Resource.from_dict(session.to_dict()).key == session.key
    assert dataclasses.replace(session, name="Other").key == session.key.replace(
        "lobby-1", "other")
    assert pickle.loads(pickle.dumps(session)).key == session.key
    assert "key" not in repr(session)
    assert Resource(Kind.HANDLE, element="x").key is None
