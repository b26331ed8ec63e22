//! A ValueTask is neither `Clone` nor `Copy`: there is no second handle to await.

use taskcheck::ValueTask;

fn main() {
    let value_task = ValueTask::<u32>::from_result(1);
    let copy = value_task.clone();
    drop((value_task, copy));
}
