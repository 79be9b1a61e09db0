"""The console: Django's admin with a dashboard on its index page."""

from django.contrib import admin


class ConsoleAdminSite(admin.AdminSite):
    site_header = "mdmcerts console"
    site_title = "mdmcerts"
    index_title = "Dashboard"
    index_template = "admin/mdmcerts_index.html"

    def index(self, request, extra_context=None):
        from apps.certificates.dashboard import dashboard_context

        extra_context = {**(extra_context or {}), **dashboard_context()}
        return super().index(request, extra_context)
