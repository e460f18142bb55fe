//! Test doubles shared by the operator's unit tests (one home each): fakes of one seam,
//! used beside the tests that run the real thing.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::engine::{Member, Membership, MembershipError};

/// A membership whose members and error the test sets.
#[derive(Default)]
pub struct FakeMembership {
    pub members: Mutex<Vec<Member>>,
    pub error: Mutex<Option<MembershipError>>,
}

impl FakeMembership {
    pub fn set_available(&self, id: &str, available: bool, down_for: Duration) {
        let mut members = self.members.lock().unwrap();
        let m = members.iter_mut().find(|m| m.id == id).unwrap();
        m.available = available;
        m.down_for = down_for;
    }
}

#[async_trait]
impl Membership for FakeMembership {
    fn members(&self) -> Result<Vec<Member>, MembershipError> {
        match self.error.lock().unwrap().clone() {
            Some(err) => Err(err),
            None => Ok(self.members.lock().unwrap().clone()),
        }
    }
    async fn set_draining(&self, id: &str, draining: bool) -> Result<bool, MembershipError> {
        let mut members = self.members.lock().unwrap();
        let Some(m) = members.iter_mut().find(|m| m.id == id) else {
            return Ok(false);
        };
        m.draining = draining;
        Ok(true)
    }
}
