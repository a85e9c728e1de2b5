"""`{% chart "name" tenant option=value %}`: the charts of `portal.charts.BUILDERS`, drawn by
the vendored Chart.js from a `json_script` element, with their figures in a table."""

from django import template
from django.template.loader import render_to_string

from portal import charts

register = template.Library()


@register.simple_tag(takes_context=True)
def chart(context, name, tenant, **options):
    """Nothing without a tenant (a superuser's "All tenants": a chart shows one tenant)."""
    if tenant is None:
        return ""
    request = context.get("request")
    # The library and its stylesheet once per page, however many charts it shows.
    first = request is None or not getattr(request, "_portal_charts_loaded", False)
    if request is not None:
        request._portal_charts_loaded = True
    return render_to_string(
        "admin/charts/_chart.html",
        {"charts": charts.build(name, tenant, **options), "load_assets": first},
        request=request,
    )
