use echostream::prelude::*;

struct Sessions;

impl Sessions {
    #[echostream::listener("user.logged_out")]
    async fn on_logout(&self, _ctx: Context, _user_id: u64) {}
}

fn main() {}
