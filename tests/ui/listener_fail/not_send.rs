use std::rc::Rc;

async fn tick() {}

#[echostream::listener("user.logged_out")]
async fn on_logout(user_id: u64) {
    let shared = Rc::new(user_id);
    tick().await;
    drop(shared);
}

fn main() {}
