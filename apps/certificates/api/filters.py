"""The certificate list filters of the staff API (the admin's filters, by hand)."""

import re
from typing import Any

from django.db.models import Q, QuerySet

from apps.certificates.models import Certificate

HEX_SEPARATORS = re.compile(r"[\s:]")


def filter_certificates(
    queryset: QuerySet[Certificate], params: dict[str, Any]
) -> QuerySet[Certificate]:
    """Narrow ``queryset`` by validated ``CertificateFilterSerializer`` data."""
    if "status" in params:
        queryset = queryset.filter(status=params["status"])
    if "ca" in params:
        queryset = queryset.filter(ca_id=params["ca"])
    if "template" in params:
        queryset = queryset.filter(template_id=params["template"])
    if "expires_within_days" in params:
        queryset = queryset.expiring_within(params["expires_within_days"])
    if params.get("q", "").strip():
        queryset = queryset.filter(search_condition(params["q"].strip()))
    return queryset


def search_condition(text: str) -> Q:
    """Serial and fingerprint are stored as bare lowercase hex; people paste them with
    colons (``3A:F2:…``), so those match without separators."""
    condition = Q(subject__icontains=text) | Q(subject_alt_names__icontains=text)
    compact = HEX_SEPARATORS.sub("", text).lower()
    if compact:
        serial = compact.lstrip("0") or compact  # stored serials have no leading zeros
        condition |= Q(serial__icontains=serial) | Q(fingerprint_sha256__icontains=compact)
    return condition
