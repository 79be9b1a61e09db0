"""Console forms of the profile editor."""

from django import forms
from django.contrib.admin.widgets import ForeignKeyRawIdWidget

from apps.devices.models import Device
from apps.profiles.models import ProfileAssignment


class PayloadFormSet(forms.BaseInlineFormSet):
    """Payload forms that know their profile while they validate, even an unsaved one, so
    ``ProfilePayload.clean`` checks templates against the profile's platform."""

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        form.instance.profile = self.instance
        return form


class DeviceChoiceForm(forms.Form):
    """Which device to render a .mobileconfig for (by id, with the admin's lookup popup)."""

    device = forms.ModelChoiceField(
        queryset=Device.objects.select_related("owner"),
        help_text="Its variables (and its owner's) fill the profile; a dynamic challenge is "
        "minted for it per dynamic SCEP payload.",
    )

    def __init__(self, *args, admin_site, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        relation = ProfileAssignment._meta.get_field("device").remote_field
        self.fields["device"].widget = ForeignKeyRawIdWidget(relation, admin_site)
