"""The pages of "Replace card" / "Set up auto-pay" (`card_setup`): the form, reached from the
customer's account page under their signed account link, and the result, at the setup's
own unguessable address (it is what a hosted form returns to, so the account link never
goes to the processor).

The form is authorised like the pay-several form (`several`'s docstring): the account token
in the URL, a signed form token, no cookies (it works inside Halo's portal frame), and a
browser `Origin` from another site refused.
"""

from datetime import timedelta

from django.conf import settings
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from billing.accounts import links
from billing.accounts.links import account_path, customer_for_token
from billing.payments import card_setup, display
from billing.payments.forms import CardSetupForm
from billing.payments.models import CardSetup, PaymentSettings
from billing.payments.several import CROSS_SITE, allow_framing
from billing.payments.views import customer_page, not_found_at, page
from portal.http import client_address, from_another_site


@csrf_exempt
@customer_page
@require_http_methods(["GET", "POST"])
def replace_card(request, tenant_code, token):
    customer = customer_for_token(tenant_code, token)
    if customer is None:
        return not_found_at(request, tenant_code)
    processor = PaymentSettings.for_tenant(customer.tenant).processor_impl()
    covers_from = card_setup.covered_from(customer)
    form = CardSetupForm(
        request.POST or None,
        account_token=token,
        consent=card_setup.consent_text(customer.tenant, customer, covers_from),
        collects_card=processor.collects_card,
        initial={"email": customer.billing_email},
    )
    error, status = "", 200
    if request.method == "POST":
        status = 400
        if from_another_site(request):
            error, status = CROSS_SITE, 403
        elif form.is_valid():
            try:
                setup = card_setup.start(
                    customer,
                    key=form.cleaned_data["attempt"],
                    card=form.card(),
                    consent_email=form.cleaned_data.get("email") or customer.billing_email,
                    client_ip=client_address(request),
                    urls=lambda setup: (setup_url(setup), setup_url(setup) + "?cancelled=1"),
                )
            except card_setup.CannotSetUp as refusal:
                error = refusal.message
            else:
                if setup.status == CardSetup.Status.PENDING and setup.checkout_url:
                    return HttpResponseRedirect(setup.checkout_url)  # the processor's own page
                if setup.status == CardSetup.Status.FAILED:
                    error = setup.failure_message
                    form = _fresh(form, token)
                else:
                    return redirect(setup_url(setup, absolute=False))
    current = card_setup.current_card(customer)
    response = page(
        request,
        "payments/card_setup.html",
        customer.tenant,
        status=status,
        customer=customer,
        form=form,
        error=error,
        current=current,
        account_url=account_path(customer),
        collects_card=processor.collects_card,
        unavailable=processor.unavailable_reason(),
        test_mode=not processor.takes_real_money,
    )
    return allow_framing(response, customer.tenant)


def _fresh(form, token):
    """The form shown again after a refused card: a new attempt key, so the next try is
    a new setup (the refused one is finished)."""
    data = form.data.copy()
    data["attempt"] = form.fields["attempt"].initial
    data.pop("card_number", None)
    data.pop("card_cvc", None)
    form.data = data
    return form


def setup_url(setup, absolute=True):
    path = reverse("payments:card_setup", args=[setup.tenant.slug, setup.public_id])
    return settings.PORTAL_BASE_URL + path if absolute else path


@customer_page
@require_GET
def result(request, tenant_code, public_id):
    """Where the form, or the processor's hosted form, leaves the customer: the card saved,
    still being confirmed (the page reloads itself), or why nothing changed."""
    setup = (
        CardSetup.objects.select_related("tenant", "customer", "saved")
        .filter(public_id=public_id, tenant__slug=tenant_code)
        .first()
    )
    if setup is None:
        return not_found_at(request, tenant_code)
    if request.GET.get("cancelled"):
        card_setup.cancel(setup)
        return redirect(setup_url(setup, absolute=False))
    card_setup.refresh(setup)
    tenant = setup.tenant
    setup.customer.tenant = tenant
    # This address outlives the account link it was reached from (the processor keeps it as
    # its return address): for a day it links to a fresh account page, then to the form
    # that mails one.
    recent = timezone.now() - setup.created < timedelta(seconds=links.FORM_MAX_AGE)
    return page(
        request,
        "payments/card_setup_result.html",
        tenant,
        setup=setup,
        saved=setup.saved,
        saved_on=display.moment(setup.finished, tenant) if setup.finished else "",
        account_url=account_path(setup.customer)
        if recent
        else reverse("accounts:request-link", args=[tenant.slug]),
    )
