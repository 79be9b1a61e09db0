"""Every portal page is made for a phone too (viewport, the portal's own stylesheet) and
loads nothing from another site."""

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from tests.portal.conftest import signed_in

pytestmark = pytest.mark.django_db

VIEWPORT = '<meta name="viewport" content="width=device-width, initial-scale=1">'


@pytest.fixture
def pages(alice, alice_laptop, alice_upload):
    return [
        reverse("portal:home"),
        reverse("portal:devices"),
        reverse("portal:certificates"),
        reverse("portal:upload"),
        reverse("portal:password-change"),
        reverse("portal:upload-delete", args=[alice_upload.pk]),
    ]


def test_every_page_has_a_viewport_and_the_portal_stylesheet(alice, pages):
    client = signed_in(alice)

    for url in pages:
        response = client.get(url)

        assert response.status_code == 200, url
        page = response.content.decode()
        assert VIEWPORT in page, url
        assert 'href="/static/portal/portal.css"' in page, url


def test_no_page_loads_anything_from_another_site(alice, pages, client):
    urls = [*pages, reverse("portal:sign-in")]
    signed = signed_in(alice)

    for url in urls:
        page = (client if url == reverse("portal:sign-in") else signed).get(url).content.decode()

        assert re.findall(r'(?:src|href)="(?:https?:)?//', page) == [], url


def test_the_stylesheet_is_a_static_file_with_a_phone_first_layout():
    path = finders.find("portal/portal.css")

    assert path is not None
    css = Path(path).read_text(encoding="utf-8")
    assert "@media (min-width: 40rem)" in css  # wider screens are the exception


def test_the_navigation_marks_the_current_page(alice):
    page = signed_in(alice).get(reverse("portal:devices")).content.decode()

    assert f'<a href="{reverse("portal:devices")}" aria-current="page">My devices</a>' in page
