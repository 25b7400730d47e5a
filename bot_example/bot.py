"""A BotCity bot that sends a report email through Microsoft 365.

Deployed to BotCity Maestro, a Runner starts it as
``python bot.py <server> <task_id> <token> <organization>``. The Azure app's client id
and secret, and the user's token, come from the Maestro credential named by the task
parameter ``ms365_credential_label`` (default ``ms365``). The first authorization is done
once by a person (see README.md); after that every Runner uses the stored token.

The task parameter ``ms365_client`` set to ``graph`` sends the report with Microsoft's
Graph SDK on the same token (``service.credential``) instead of the Outlook plugin; it
needs ``msgraph-sdk`` (``botcity-ms365-credentials-plugin[graph]`` in requirements.txt).
"""

import asyncio

from botcity.maestro import AutomationTaskFinishStatus, BotMaestroSDK
from botcity.plugins.ms365.outlook import MS365OutlookPlugin

from botcity.plugins.ms365.credentials import (
    AuthorizationRequired,
    MS365CredentialsError,
    MS365CredentialsPlugin,
    Scopes,
    StoreError,
    task_execution,
)

#: What the bot does with Microsoft 365 (authorize once with these: see README.md).
SCOPES = [Scopes.BASIC, Scopes.MAIL_SEND]

# Run the bot on your machine without Maestro too (the plugin then uses o365_token.txt).
BotMaestroSDK.RAISE_NOT_CONNECTED = False


def send_with_graph_sdk(service, subject, text, to):
    """The same email with Microsoft's Graph SDK (msgraph-sdk) on the plugin's token."""
    from msgraph import GraphServiceClient
    from msgraph.generated.models.body_type import BodyType
    from msgraph.generated.models.email_address import EmailAddress
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.models.message import Message
    from msgraph.generated.models.recipient import Recipient
    from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
        SendMailPostRequestBody,
    )

    async def send():
        graph = GraphServiceClient(credentials=service.credential,
                                   scopes=["https://graph.microsoft.com/.default"])
        # the Graph the plugin uses: Microsoft's, another cloud's, or the sandbox's
        graph.request_adapter.base_url = service.credential.graph_url + "/v1.0"
        await graph.me.send_mail.post(SendMailPostRequestBody(
            message=Message(subject=subject,
                            body=ItemBody(content_type=BodyType.Text, content=text),
                            to_recipients=[Recipient(email_address=EmailAddress(address=a))
                                           for a in to]),
            save_to_sent_items=True))

    asyncio.run(send())


def main():
    maestro = BotMaestroSDK.from_sys_args()
    try:
        # maestro.get_execution(), with Maestro's failures told as the plugin tells them
        execution = task_execution(maestro)
    except StoreError as exc:
        # Maestro is unreachable or refused the Runner's token: nothing can be reported
        # to it, so the Runner's log gets the reason and the process fails
        print(f"The bot could not start: {exc}")
        return 1
    parameters = execution.parameters or {}
    label = parameters.get("ms365_credential_label", "ms365")
    print(f"Task ID is: {execution.task_id}")

    try:
        service = MS365CredentialsPlugin(maestro=maestro, credential_label=label)
        service.authenticate(scopes=SCOPES)
        user = service.ms365_account.get_current_user_data()
        print(f"Signed in to Microsoft 365 as {user.user_principal_name}.")

        # The bot's job: send its report (here, to the signed-in account itself).
        subject = f"BotCity task {execution.task_id} report"
        text = ("The bot ran on a BotCity Runner and used Microsoft 365 with the token "
                "stored in BotCity Maestro.")
        if parameters.get("ms365_client") == "graph":
            send_with_graph_sdk(service, subject, text, [user.user_principal_name])
        else:
            outlook = MS365OutlookPlugin(service_account=service)
            outlook.send_message(subject=subject, text_content=text,
                                 to_addrs=[user.user_principal_name])
        message = f"Report sent to {user.user_principal_name}."
        print(message)
        status, done, failed = AutomationTaskFinishStatus.SUCCESS, 1, 0
    except AuthorizationRequired as exc:
        # Nobody can consent on a Runner: say what a person must do, and fail the task.
        message = f"Microsoft 365 authorization needed: {exc}"
        print(message)
        status, done, failed = AutomationTaskFinishStatus.FAILED, 0, 1
    except MS365CredentialsError as exc:
        # An expired secret, Maestro or Microsoft down, ...: the message says what to do
        # (and the plugin has told Maestro when an operator must act).
        message = f"Microsoft 365: {exc}"
        print(message)
        status, done, failed = AutomationTaskFinishStatus.FAILED, 0, 1
    except Exception as exc:
        maestro.error(task_id=execution.task_id, exception=exc)
        message = f"The bot failed: {type(exc).__name__}: {exc}"
        print(message)
        status, done, failed = AutomationTaskFinishStatus.FAILED, 0, 1

    try:
        maestro.finish_task(
            task_id=execution.task_id,
            status=status,
            message=message,
            total_items=1,
            processed_items=done,
            failed_items=failed,
        )
    except Exception as exc:  # Maestro went away during the run: say so, and what happened
        print(f"Could not report the end of task {execution.task_id} to BotCity Maestro "
              f"({type(exc).__name__}); the task's result was: {message}")
        return 1
    return 0 if status == AutomationTaskFinishStatus.SUCCESS else 1


if __name__ == "__main__":
    raise SystemExit(main())
