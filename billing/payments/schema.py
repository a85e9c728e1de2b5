"""The pay link's OpenAPI documentation (`views.PayLinkView`; which views the schema holds:
`portal.api.api_paths_only`)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

pay_link_schema = extend_schema(
    operation_id="pay_link",
    summary="Open an invoice's pay page",
    description="The link partners put in Halo's invoice emails, for customers' browsers: "
    "`ref` is the Halo invoice ID or the third-party number (per the tenant's setting; "
    "Halo's `$INVOICEID`). It redirects to the invoice's pay page, whose URL is secret, "
    "or, when the tenant asks before showing a pay page, shows that question. Answers "
    "are HTML pages. Lookups are limited per client address (`PAYMENTS_LINK_RATE`).",
    parameters=[
        OpenApiParameter(
            "ref",
            OpenApiTypes.STR,
            OpenApiParameter.PATH,
            description="Halo invoice ID or third-party invoice number.",
        ),
        OpenApiParameter(
            "Location",
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            response=[302],
            required=True,
            description="The pay page (a path on the portal).",
        ),
    ],
    responses={
        302: OpenApiResponse(description="To the invoice's pay page."),
        (200, "text/html"): OpenApiResponse(
            OpenApiTypes.STR,
            description="A question before the pay page (the invoice's total or billing "
            "email), or a form to pay an invoice the portal does not know yet.",
        ),
        (404, "text/html"): OpenApiResponse(
            OpenApiTypes.STR,
            description="No such tenant or invoice, or Halo did not fill in `$INVOICEID`.",
        ),
        (429, "text/html"): OpenApiResponse(
            OpenApiTypes.STR, description="Too many lookups from this address."
        ),
    },
    tags=["pay links"],
)
