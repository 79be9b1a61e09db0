"""Numbers for the console dashboard."""

import datetime

from django.db.models import Count, Q
from django.utils import timezone

from apps.certificates.choices import CertificateStatus
from apps.certificates.models import Certificate

WEEKS = 12
CHART_HEIGHT = 160  # px of the tallest bar in the dashboard's SVG
CHART_BASELINE = 190


def dashboard_context() -> dict:
    counts = dict(Certificate.objects.values_list("status").annotate(n=Count("id")).order_by())
    by_status = [
        {"status": status, "label": label, "count": counts.get(status, 0)}
        for status, label in CertificateStatus.choices
    ]
    return {"certificates_by_status": by_status, "expiring_weeks": expiring_per_week()}


def expiring_per_week(weeks: int = WEEKS) -> list[dict]:
    """Active certificates expiring in each of the next ``weeks`` weeks, in one query."""
    now = timezone.now()
    week = datetime.timedelta(weeks=1)
    bounds = [(now + i * week, now + (i + 1) * week) for i in range(weeks)]
    counts = Certificate.objects.filter(status=CertificateStatus.ACTIVE).aggregate(
        **{
            f"w{i}": Count("id", filter=Q(not_after__gt=start, not_after__lte=end))
            for i, (start, end) in enumerate(bounds)
        }
    )
    peak = max(counts.values(), default=0) or 1
    rows = []
    for i, (start, _) in enumerate(bounds):
        height = round(CHART_HEIGHT * counts[f"w{i}"] / peak)
        rows.append(
            {
                "start": start.date(),
                "count": counts[f"w{i}"],
                "x": 40 + 60 * i,
                "height": height,
                "y": CHART_BASELINE - height,
            }
        )
    return rows
