"""The opt-out page a reminder links to: no login, the signed token is the key.

A GET only shows the choice (mail scanners open links; they must not unsubscribe anyone);
a POST makes it: the page's button, or a mail provider's one-click unsubscribe (RFC 8058,
`List-Unsubscribe=One-Click`), which carries no CSRF token, so the view is exempt: the
token in the URL is what authorises the change.
"""

from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from billing.payments.views import customer_page, not_found, page
from billing.reminders.links import customer_for_token
from billing.reminders.models import ReminderOptOut


@csrf_exempt
@customer_page
@require_http_methods(["GET", "POST"])
def opt_out(request, tenant_code, token):
    customer = customer_for_token(tenant_code, token)
    if customer is None:
        return not_found(request)
    tenant = customer.tenant
    if request.method == "POST":
        if request.POST.get("do") == "resume":
            ReminderOptOut.objects.filter(customer=customer).delete()
        else:  # the page's "stop" button, or one-click unsubscribe
            ReminderOptOut.objects.get_or_create(
                customer=customer,
                defaults={"tenant": tenant, "source": ReminderOptOut.Source.LINK},
            )
        return redirect(request.path)
    stopped = ReminderOptOut.objects.filter(customer=customer).exists()
    return page(request, "reminders/opt_out.html", tenant, customer=customer, stopped=stopped)
