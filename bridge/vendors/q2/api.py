"""OpenTimeClock Q2's API (read-only here; seed opentimeclock-q2-api.txt): one URL, a JSON body
naming the `cmd`, with companyId and developerToken in the body (never in a URL). Answers are
`{statusCode: SUCCESS|ERROR, message, nextRecord ("-1": no more), data: [...]}`."""

from __future__ import annotations

from pydantic import SecretStr

QUERY_USERS = "api/q2QueryUsers"
QUERY_TIME_CARDS = "api/q2QueryTimeCards"
SUCCESS = "SUCCESS"
NO_MORE = "-1"  # nextRecord when the last page was sent


def auth_fields(company_id: str, developer_token: SecretStr) -> dict[str, str]:
    """The credentials as Q2 takes them: fields of the JSON body."""
    return {"companyId": company_id, "developerToken": developer_token.get_secret_value()}
