//! `as_task()` converts a ValueTask once, before any await: after the await consumed it,
//! there is nothing left to convert.

use taskcheck::{Task, TaskError, ValueTask};

async fn convert_after_await(value_task: ValueTask<u32>) -> Result<Task<u32>, TaskError> {
    let _value = value_task.await?;
    Ok(value_task.as_task())
}

fn main() {
    let _ = convert_after_await(ValueTask::from_result(1));
}
