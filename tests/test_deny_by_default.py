"""The API refuses by default: a DRF view is open only when it says who may call it."""

import pytest
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView


def drf_views():
    """(route, view class) of every DRF view the URL resolver reaches, recursively."""
    found = []

    def walk(entries, prefix):
        for entry in entries:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern):
                cls = getattr(entry.callback, "cls", None)
                if isinstance(cls, type) and issubclass(cls, APIView):
                    found.append((route, cls))

    walk(get_resolver().url_patterns, "")
    return found


DRF_VIEWS = drf_views()


def declares_permissions(cls):
    """Whether the view (or a base of its own, not DRF's APIView) sets permission_classes."""
    return any(
        "permission_classes" in vars(base) for base in cls.__mro__[: cls.__mro__.index(APIView)]
    )


def test_a_view_that_says_nothing_is_refused():
    class Forgotten(APIView):
        def get(self, request):
            return Response({"secret": "tenant data"})

    response = Forgotten.as_view()(RequestFactory().get("/api/v1/forgotten"))
    assert response.status_code in (401, 403)
    assert "tenant data" not in response.rendered_content.decode()


def test_the_default_requires_authentication():
    assert [cls.__name__ for cls in api_settings.DEFAULT_PERMISSION_CLASSES] == ["IsAuthenticated"]


def test_the_walk_finds_the_api():
    routes = {route for route, _ in DRF_VIEWS}
    assert {"api/v1/usage", "api/v1/invoices/<str:ref>/pdf", "api/schema/"} <= routes
    assert any(route.startswith("pay/") for route in routes)
    assert any("halo/webhook" in route for route in routes)


@pytest.mark.parametrize(("route", "cls"), DRF_VIEWS, ids=[route for route, _ in DRF_VIEWS])
def test_every_api_view_declares_who_may_call_it(route, cls):
    """Public endpoints (pay links, webhooks with their own checks, token APIs, the schema)
    say so in the view; any other view falls back to the refusing default."""
    if declares_permissions(cls):
        return
    permissions = cls().get_permissions()
    assert permissions, f"{route}: {cls.__name__} has no permission classes"
    assert not any(isinstance(p, AllowAny) for p in permissions), route


def test_a_view_that_says_nothing_parses_json_strictly():
    """JSON no database stores answers 400 in any API, not only the ones that remember."""

    class Forgotten(APIView):
        permission_classes = [AllowAny]

        def post(self, request):
            return Response({"got": request.data})

    request = RequestFactory().post(
        "/api/v1/forgotten", data=b'{"name": "nul \\u0000"}', content_type="application/json"
    )
    response = Forgotten.as_view()(request)
    assert response.status_code == 400


@pytest.mark.parametrize(("route", "cls"), DRF_VIEWS, ids=[route for route, _ in DRF_VIEWS])
def test_a_view_open_to_anyone_says_allow_any(route, cls):
    """`permission_classes = []` lets everyone in, as AllowAny does, but reads like a
    permission forgotten: a public view says AllowAny, one with its own check names it."""
    if declares_permissions(cls):
        assert cls.permission_classes, f"{route}: {cls.__name__} declares no permission classes"
