"""The Content-Security-Policy middleware: django-csp's, with the policy in
`settings.CONTENT_SECURITY_POLICY`, on every response except PDFs."""

from csp.middleware import CSPMiddleware as DjangoCSPMiddleware


class CSPMiddleware(DjangoCSPMiddleware):
    """Browsers' built-in PDF viewers run under the PDF's own policy and stop under a strict
    one (and the admin shows invoice PDFs in a frame, which `frame-ancestors` forbids)."""

    def process_response(self, request, response):
        if response.get("Content-Type", "").startswith("application/pdf"):
            return response
        return super().process_response(request, response)
