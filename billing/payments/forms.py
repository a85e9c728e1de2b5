"""The customer's pay form: which fields show depends on the processor and the settings."""

import re
import secrets
from decimal import Decimal

from django import forms
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import mark_safe

from billing.accounts import links
from billing.payments.processors import CardDetails

EXPIRY = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")


class FastInput:
    """An <input> built in Python instead of through Django's widget templates, which were
    a third of the pay page's time. Attributes still come from the bound field (ids,
    aria-describedby, aria-invalid), exactly as the template would have written them."""

    def render(self, name, value, attrs=None, renderer=None):
        widget = self.get_context(name, value, attrs)["widget"]
        attributes = {"type": widget["type"], "name": widget["name"], **widget["attrs"]}
        if widget["value"] is not None:
            attributes["value"] = widget["value"]
        html = "".join(
            f" {key}" if value is True else f' {key}="{escape(str(value))}"'
            for key, value in attributes.items()
            if value is not False and value is not None
        )
        return mark_safe(f"<input{html}>")  # noqa: S308  every value is escaped above


class TextInput(FastInput, forms.TextInput):
    pass


class EmailInput(FastInput, forms.EmailInput):
    pass


class HiddenInput(FastInput, forms.HiddenInput):
    pass


class CheckboxInput(FastInput, forms.CheckboxInput):
    pass


def luhn_ok(number):
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


class PayForm(forms.Form):
    """`attempt` is a fresh random key per render: a resubmitted form replays its payment
    instead of charging again (see `checkout.pay`)."""

    attempt = forms.CharField(widget=HiddenInput, max_length=64)
    email = forms.EmailField(
        label="Email for your receipt",
        required=False,
        max_length=254,  # the payment's column (a form's EmailField takes up to 320)
        help_text="Without it, the receipt goes to the billing contact we hold.",
        widget=EmailInput(attrs={"autocomplete": "email"}),
    )

    def __init__(self, *args, partial_up_to=None, collects_card=False, consent="", **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["attempt"].initial = secrets.token_urlsafe(24)
        self.consent = consent
        if partial_up_to is not None:
            self.fields["amount"] = forms.DecimalField(
                label="Amount to pay",
                max_digits=14,
                decimal_places=2,
                min_value=Decimal("0.01"),
                initial=partial_up_to,
                help_text="Pay the amount due in full, or part of it.",
                widget=TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
            )
        if collects_card:
            self.fields.update(card_fields())
        if consent:
            self.fields["save_method"] = forms.BooleanField(
                label="Save this card to pay future invoices automatically",
                required=False,
                widget=CheckboxInput,
            )

    def clean_card_number(self):
        number = re.sub(r"[\s-]", "", self.cleaned_data["card_number"])
        if not number.isdigit() or not 12 <= len(number) <= 19 or not luhn_ok(number):
            raise forms.ValidationError("Enter the card number as printed on your card.")
        return number

    def clean_card_expiry(self):
        match = EXPIRY.match(self.cleaned_data["card_expiry"])
        if not match or not 1 <= int(match[1]) <= 12:
            raise forms.ValidationError("Enter the expiry date as MM/YY, for example 04/29.")
        month, year = int(match[1]), int(match[2]) % 100 + 2000
        today = timezone.localdate()
        if (year, month) < (today.year, today.month):
            raise forms.ValidationError("This card has expired.")
        return month, year

    def clean_card_cvc(self):
        cvc = self.cleaned_data["card_cvc"].strip()
        if not cvc.isdigit() or len(cvc) not in (3, 4):
            raise forms.ValidationError("Enter the 3 or 4 digit security code.")
        return cvc

    def card(self):
        if "card_number" not in self.cleaned_data:
            return None
        month, year = self.cleaned_data["card_expiry"]
        return CardDetails(
            number=self.cleaned_data["card_number"],
            exp_month=month,
            exp_year=year,
            cvc=self.cleaned_data["card_cvc"],
            name=self.cleaned_data.get("card_name", ""),
        )

    def payment_details(self, client_ip):
        saving = bool(self.cleaned_data.get("save_method"))
        return {
            "payer_email": self.cleaned_data.get("email", ""),
            "save_method": saving,
            "consent_text": self.consent if saving else "",
            "client_ip": client_ip or None,
        }


class UnlistedPayForm(PayForm):
    """For a link naming an invoice the portal does not know (when the tenant allows it):
    the payer states the amount, and leaves an email so staff can reach them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount"] = forms.DecimalField(
            label="Amount to pay",
            max_digits=14,
            decimal_places=2,
            min_value=Decimal("1.00"),
            help_text="As shown on your invoice.",
            widget=TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
        )
        self.fields["email"].required = True
        self.fields["email"].help_text = "We send the receipt here."
        self.order_fields(["attempt", "amount", "email"])


def card_fields():
    def text(label, autocomplete, **attrs):
        return forms.CharField(
            label=label,
            max_length=40,
            widget=TextInput(attrs={"autocomplete": autocomplete, **attrs}),
        )

    return {
        "card_name": forms.CharField(
            label="Name on card",
            max_length=100,
            required=False,
            widget=TextInput(attrs={"autocomplete": "cc-name"}),
        ),
        "card_number": text("Card number", "cc-number", inputmode="numeric"),
        "card_expiry": text("Expiry date", "cc-exp", inputmode="numeric", placeholder="MM/YY"),
        "card_cvc": text("Security code", "cc-csc", inputmode="numeric", placeholder="CVC"),
    }


AMOUNT_TEXT = re.compile(r"[^\d.,\-]")


def parse_amount(text):
    """A money amount as customers type it: "£1,234.50", "1234,50", "1.234,50 €", "120";
    None when it is not one."""
    text = AMOUNT_TEXT.sub("", text or "")
    if not text or len(text) > 30:
        return None
    if "," in text and "." in text:
        decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
    elif text.count(",") == 1 and len(text.rsplit(",", 1)[1]) in (1, 2):
        decimal_mark = ","
    elif text.count(".") == 1 and len(text.rsplit(".", 1)[1]) != 3:
        decimal_mark = "."
    else:
        decimal_mark = ""  # only thousands separators (or one: "1,234", "1.234")
    whole, _, fraction = text.rpartition(decimal_mark) if decimal_mark else (text, "", "")
    digits = re.sub(r"[.,]", "", whole) + ("." + fraction if decimal_mark else "")
    try:
        return Decimal(digits).quantize(Decimal("0.01"))
    except ArithmeticError:
        return None


class LinkCheckForm(forms.Form):
    """The pay-link question (`PaymentSettings.link_check`): the invoice's total, or the
    billing email it was sent to."""

    def __init__(self, *args, question, **kwargs):
        super().__init__(*args, **kwargs)
        self.question = question
        if question == "email":
            self.fields["answer"] = forms.CharField(
                label="Billing email address",
                max_length=254,
                help_text="The address this invoice was sent to.",
                widget=EmailInput(attrs={"autocomplete": "email"}),
            )
        else:
            self.fields["answer"] = forms.CharField(
                label="Invoice total",
                max_length=40,
                help_text="The total shown on the invoice, including tax, e.g. 120.00.",
                widget=TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
            )

    def clean_answer(self):
        answer = self.cleaned_data["answer"].strip()
        if self.question != "email" and parse_amount(answer) is None:
            raise forms.ValidationError("Enter the total as a number, e.g. 120.00.")
        return answer

    def matches(self, invoice):
        """Whether the (valid) answer is right for `invoice`."""
        answer = self.cleaned_data["answer"]
        if self.question == "email":
            expected = invoice.customer.billing_email if invoice.customer else ""
            return bool(expected) and answer.casefold() == expected.strip().casefold()
        return parse_amount(answer) == Decimal(invoice.total).quantize(Decimal("0.01"))


# -- several invoices, one charge (the account page's "Pay several invoices") ------------------

#: Most invoices one payment may cover (a page of a customer's open invoices).
MAX_SELECTED = 200


class AccountFormMixin(forms.Form):
    """A form reached from the customer's account page, authorised without cookies: its
    signed form token (`links.form_token`, the account page's own) names `action` and the
    account link it was shown under (see `billing.payments.several`)."""

    action = ""
    expired = "This form has expired. Nothing changed: reload the page."
    form_token = forms.CharField(widget=HiddenInput, max_length=500)

    def __init__(self, *args, account_token, **kwargs):
        super().__init__(*args, **kwargs)
        self.account_token = account_token
        self.fields["form_token"].initial = links.form_token(account_token, self.action)
        self.fields["form_token"].error_messages["required"] = self.expired

    def clean_form_token(self):
        token = self.cleaned_data["form_token"]
        if not links.form_token_ok(token, self.account_token, self.action):
            raise forms.ValidationError(self.expired)
        return token


class InvoiceIdsField(forms.Field):
    """Invoice ids as the form sends them (one `invoice` value per ticked box): whole
    numbers, at most `MAX_SELECTED`, each named once."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        values = value if isinstance(value, list | tuple) else ([value] if value else [])
        if len(values) > MAX_SELECTED:
            raise forms.ValidationError(f"Choose at most {MAX_SELECTED} invoices at a time.")
        ids = []
        for raw in values:
            text = str(raw).strip()
            # ASCII digits only, and few enough to fit any database's integer.
            if not (text.isascii() and text.isdigit() and len(text) <= 18):
                raise forms.ValidationError(
                    "The invoices chosen could not be read: reload the page and choose again."
                )
            ids.append(int(text))
        return list(dict.fromkeys(ids))


class SelectionForm(forms.Form):
    """Which of the customer's open invoices to pay: every one ("the whole balance") or the
    ones ticked. `payable` maps each invoice id that may be paid now to its invoice;
    `customer`'s other invoices are named in the refusal, any other id is not."""

    ALL, CHOSEN = "all", "chosen"

    pay = forms.ChoiceField(
        choices=[(ALL, "The whole balance"), (CHOSEN, "The ticked invoices")],
        widget=HiddenInput,
        error_messages={"required": "Choose what to pay.", "invalid_choice": "Choose what to pay."},
    )
    invoice = InvoiceIdsField(required=False)

    def __init__(self, *args, customer, payable, **kwargs):
        super().__init__(*args, **kwargs)
        self.customer, self.payable = customer, payable

    def clean_invoice(self):
        ids = self.cleaned_data["invoice"]
        for pk in ids:
            if pk in self.payable:
                continue
            own = self.customer.invoices.filter(pk=pk).first()
            if own is not None:
                raise forms.ValidationError(
                    f"Invoice {own.display_number()} cannot be paid here: it is paid, "
                    "cancelled, or a payment for it is in progress."
                )
            raise forms.ValidationError(
                "One of the invoices chosen is not an open invoice on this account. Reload "
                "the page and choose again."
            )
        return ids

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("pay") == self.CHOSEN and "invoice" in cleaned and not cleaned["invoice"]:
            self.add_error("invoice", "Choose at least one invoice to pay.")
        return cleaned

    def invoice_ids(self):
        """The ids chosen (in the order given), or None for the whole balance."""
        if self.cleaned_data["pay"] == self.ALL:
            return None
        return self.cleaned_data["invoice"]

    def chosen(self):
        ids = self.invoice_ids()
        if ids is None:
            return list(self.payable.values())
        return [self.payable[pk] for pk in ids]


class PaySeveralForm(AccountFormMixin, PayForm, SelectionForm):
    """The pay step: the selection again (hidden), the total the customer was shown, the
    signed form token and the pay form's own fields."""

    action = "pay_several"
    expired = "This payment form has expired. Nothing was charged: reload the page."
    total = forms.DecimalField(widget=HiddenInput, max_digits=14, decimal_places=2)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "amount" in self.fields:
            self.fields["amount"].help_text = (
                "Pay the total, or part of it: it pays the oldest invoices first, and an "
                "invoice paid in part keeps the rest due."
            )


class CardSetupForm(AccountFormMixin, PayForm):
    """The account page's "Replace card": the card (the built-in form's processor only), the
    payer's email, the consent ticked, and the signed form token."""

    action = "card_setup"

    def __init__(self, *args, consent, **kwargs):
        super().__init__(*args, **kwargs)
        self.consent = consent
        self.fields["email"].label = "Your email"
        self.fields[
            "email"
        ].help_text = "Kept with your consent. Without it, we use the billing contact we hold."
        self.fields["agree"] = forms.BooleanField(
            label="I agree: save this card and use it for auto-pay",
            error_messages={"required": "Tick the box to agree, or leave this page."},
            widget=CheckboxInput,
        )
