//! A ValueTask is single-await: `.await` consumes it, so a second await is a use of a
//! moved value. (.NET can only throw at run time.)

use taskcheck::{TaskError, ValueTask};

async fn await_twice(value_task: ValueTask<u32>) -> Result<u32, TaskError> {
    let first = value_task.await?;
    let second = value_task.await?;
    Ok(first + second)
}

fn main() {
    let _ = await_twice(ValueTask::from_result(1));
}
