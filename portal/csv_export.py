"""The one way the portal writes CSV: cells a spreadsheet would run as formulas are
neutralised (CSV injection, OWASP).

A cell starting with `=`, `+`, `-`, `@` (and `|`, `%`) gets a leading `'` from defusedcsv,
unless it is a plain number such as `-12.50`; cells starting with a tab or a carriage
return, which defusedcsv leaves alone, get one here. Names, SKUs and Halo's error messages
are typed by tenant admins or come from Halo: a partner's accountant opens the file.
"""

from numbers import Number

from defusedcsv import csv as defused
from django.http import HttpResponse
from django.utils.http import content_disposition_header

CONTROL_STARTS = ("\t", "\r")


def _cell(value):
    if value is None or isinstance(value, Number):
        return value
    text = str(value)
    return "'" + text if text.startswith(CONTROL_STARTS) else text


class _Writer:
    def __init__(self, target):
        self._writer = defused.writer(target)

    def writerow(self, row):
        return self._writer.writerow([_cell(value) for value in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def writer(target):
    """A `csv.writer` on `target` whose cells are neutralised."""
    return _Writer(target)


def csv_response(filename, header, rows):
    """An attachment download of `header` and `rows`, neutralised."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    out = writer(response)
    out.writerow(header)
    out.writerows(rows)
    return response
