"""Customer-facing payment URLs, all under /pay/<tenant code>/.

The pay link takes any reference (third-party numbers may hold slashes), so it comes last
and everything else lives under a fixed word it cannot be confused with.
"""

from django.urls import path

from billing.payments import card_pages, several, views

app_name = "payments"
urlpatterns = [
    path("pay/<slug:tenant_code>/invoice/<str:token>", views.pay, name="pay"),
    path("pay/<slug:tenant_code>/invoice/<str:token>/pdf", views.invoice_pdf, name="pdf"),
    path("pay/<slug:tenant_code>/payment/<str:public_id>", views.payment, name="payment"),
    path("pay/<slug:tenant_code>/-/logo", views.logo, name="logo"),
    path("pay/<slug:tenant_code>/-/pay", views.pay_unlisted, name="pay-unlisted"),
    path("pay/<slug:tenant_code>/-/check", views.check_link, name="check"),
    path("pay/<slug:tenant_code>/-/stripe/webhook", views.stripe_webhook, name="stripe-webhook"),
    path(
        "pay/<slug:tenant_code>/-/account/<str:token>/pay",
        several.pay_several,
        name="pay_several",
    ),
    path(
        "pay/<slug:tenant_code>/-/account/<str:token>/card",
        card_pages.replace_card,
        name="replace_card",
    ),
    path("pay/<slug:tenant_code>/-/card/<str:public_id>", card_pages.result, name="card_setup"),
    path("pay/<slug:tenant_code>/<path:ref>", views.PayLinkView.as_view(), name="link"),
]
