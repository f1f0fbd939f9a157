"""The client's error line prints a message as it is: tools' words such as KiCad's
"Track [/VIN]" are not rich markup."""

from __future__ import annotations

import pytest
import typer

from hwrepo.client.api import ClientError
from hwrepo.entrypoints import client_cli


def test_a_message_with_brackets_is_printed_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    message = "violation 3 names no board item (Track [/VIN] on F.Cu, [bold]x[/bold])"
    with pytest.raises(typer.Exit) as ended:
        client_cli.fail(ClientError(message))
    assert ended.value.exit_code == 3
    assert " ".join(capsys.readouterr().err.split()) == f"error: {message}"
