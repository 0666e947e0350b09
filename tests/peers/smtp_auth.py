"""aiosmtpd with STARTTLS and AUTH required, for jit-broker's SMTP auth test.

Usage: smtp_auth.py PORT MAILDIR CERT KEY USER PASSWORD
The command-line `python -m aiosmtpd` cannot require AUTH; this wraps the same
server class (aiosmtpd's Controller) with an authenticator.
"""
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, cert, key, user, password = sys.argv[1:7]


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    return AuthResult(success=ok)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Mailbox(maildir),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
)
controller.start()
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
