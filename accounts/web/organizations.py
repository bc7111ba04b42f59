"""The dashboard's home, creating an organization and switching between the user's organizations."""
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import services
from accounts.models import Organization
from accounts.tenancy import current_membership, switch_organization


def home(request):
    if not request.user.is_authenticated:
        return redirect("login")
    if current_membership(request) is None:
        return redirect("organization-create")
    return redirect("usage")


NAME_TAKEN = "An organization with this name already exists."


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Shown to your team and on invoices; unique on this server.")

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the organization a name.")
        if Organization.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError(NAME_TAKEN)
        return name


@login_required
def organization_create(request):
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            organization = services.organization_create(name=form.cleaned_data["name"], owner=request.user)
        except services.OrganizationNameTaken:  # created by someone else since the form was checked
            form.add_error("name", NAME_TAKEN)
        else:
            switch_organization(request, organization.pk)
            messages.success(request, f"Organization {organization.name} created. You are its owner.")
            return redirect("keys")
    return render(request, "dashboard/organization_create.html", {"form": form})


@login_required
@require_POST
def organization_switch(request):
    wanted = request.POST.get("organization", "")
    if wanted == "new":
        return redirect("organization-create")
    if switch_organization(request, wanted) is None:
        messages.error(request, "You are not a member of that organization.")
    return redirect("home")
