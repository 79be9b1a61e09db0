"""Shared fixtures. Personas: alice is a superuser, bob is staff with view rights only,
charlie is a signed-in user with no staff access; dana and erin are device owners (dana
with a UPN), redefined where a folder needs them otherwise."""

import pytest
from django.contrib.auth.models import Permission

from apps.devices.models import UserAttributes
from mdmcerts.celery import app as celery_app
from tests.factories import force_user


@pytest.fixture
def alice(db):
    user = force_user("alice", is_staff=True, is_superuser=True)
    user.set_password("alice-password-1")
    user.save()
    return user


@pytest.fixture
def bob(db):
    user = force_user("bob", is_staff=True)
    user.set_password("bob-password-1")
    user.save()
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


@pytest.fixture
def charlie(db):
    user = force_user("charlie")
    user.set_password("charlie-password-1")
    user.save()
    return user


@pytest.fixture
def dana(db):
    user = force_user("dana", first_name="Dana", email="dana@zylker.com")
    UserAttributes.objects.create(user=user, upn="dana@corp.zylker.com")
    return user


@pytest.fixture
def erin(db):
    return force_user("erin", email="erin@zylker.com")


@pytest.fixture
def eager_celery():
    """Tasks run at once in this process (no broker, no worker), errors raised."""
    before = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before
