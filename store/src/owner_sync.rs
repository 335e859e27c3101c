//! The owner's side of receipts and sync reads: receipt lists and gap pages from the
//! conversation's file, inbox pages and the mark-unread flag from the user's home file.
//! A child module of `owner`, so it uses the owner's writers and files directly.

use std::sync::Arc;

use tidings_schema::Rejection;
use tidings_schema::mesh::{OwnerReply, OwnerRequest};

use super::{Owner, run_blocking};
use crate::batch::WriteOp;
use crate::{receipts_read, validate};

impl Owner {
    /// Carries out the receipt and sync requests other than `Receipt`, which takes the
    /// write path of the conversation.
    pub(super) async fn call_sync(&self, request: OwnerRequest) -> Result<OwnerReply, Rejection> {
        let placement = self.placement;
        match request {
            OwnerRequest::Receipts {
                user,
                conversation_id,
            } => {
                let db = Arc::clone(self.database_of_conversation(conversation_id));
                let list = run_blocking(move || {
                    receipts_read::receipt_list(&db, placement, &user, conversation_id)
                })
                .await??;
                Ok(OwnerReply::ReceiptList(list))
            }
            OwnerRequest::Gap { user, request } => {
                let db = Arc::clone(self.database_of_conversation(request.conversation_id));
                let page =
                    run_blocking(move || receipts_read::gap(&db, placement, &user, &request))
                        .await??;
                Ok(OwnerReply::GapPage(page))
            }
            OwnerRequest::InboxSync { user, request } => {
                let (_, file) = placement.user(&user);
                let db = Arc::clone(&self.databases[file]);
                let page = run_blocking(move || {
                    receipts_read::inbox_page(&db, placement, &user, &request)
                })
                .await??;
                Ok(OwnerReply::InboxPage(page))
            }
            OwnerRequest::MarkUnread { user, request } => {
                validate::check_user("user", &user)?;
                let (_, file) = placement.user(&user);
                let outcome = self
                    .submit(file, WriteOp::MarkUnread { user, request })
                    .await?;
                Ok(outcome.reply)
            }
            _ => Err(Rejection::internal(
                "a request that is not a receipt or sync read was routed to call_sync",
            )),
        }
    }
}
